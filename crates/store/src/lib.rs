//! The storage contract of Switchboard.
//!
//! One trait, [`Store`], implemented by `switchboard-store-postgres` (production, shared
//! by any number of manager replicas) and `switchboard-store-sqlite` (embedded, one
//! manager). The server holds an `Arc<dyn Store>` and never sees SQL.
//!
//! Two invariants live here rather than in the engine, because only the database can keep
//! them under concurrency:
//!
//! * [`Store::claim_task`] assigns a task to an instance exactly once, and only while the
//!   instance is under capacity. No in-process lock is involved: two managers racing for
//!   the same task or the same last slot are arbitrated by the database.
//! * [`Store::transition_task`] and [`Store::record_progress`] are *fenced*: they name the
//!   attempt they belong to and change nothing when it is no longer current.
//!
//! The [`conformance`] module (feature `conformance`) holds the cases every backend must
//! pass; each backend's test binary runs all of them against a real database.

#![forbid(unsafe_code)]

pub mod batch;
pub mod cluster;
pub mod columns;
pub mod committer;
mod error;
pub mod query;

#[cfg(feature = "conformance")]
pub mod conformance;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use switchboard_domain::policy::ScopePolicy;
use switchboard_domain::tasklog::{Appended, LogAppend, LogChunk, LogPosition};
use switchboard_domain::vault::TaskSecret;
use switchboard_domain::{
    ApiKey, ApiKeyId, Attempt, AuditEntry, CapabilityResult, Connector, ConnectorId, DelegateGroup, DelegateInstance,
    DelegateToken, Failure, GroupId, Ident, InstanceId, LastSuccess, NewTask, Pause, Scope, SecretHash, SecretId,
    SelectionLogEntry, Selectors, Task, TaskAttempt, TaskEvent, TaskId, TokenId,
};

pub use batch::{ClaimWrite, Submission, TaskWrite, Written};
pub use cluster::{ClusterEvent, ClusterSignal, ClusterSignals, SocketTarget};
pub use committer::BatchSnapshot;
pub use error::{Conflict, StoreError, StoreResult, append_refused};
pub use query::{AuditQuery, KeyUse, Page, QueueQuery, QueueShape, QueueShapes, TaskQuery};

/// The outcome of [`Store::insert_task`].
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    /// A new task was stored.
    Created(Task),
    /// The idempotency key was seen before with the same request: the original task.
    Existing(Task),
}

/// What [`Store::submit_task`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub inserted: Inserted,
    /// The claim's outcome; `None` without a claim or for a replay.
    pub claim: Option<Claim>,
    /// The waiting tasks of its concurrency key that it cancelled (`cancel_older`).
    pub superseded: Vec<TaskId>,
}

impl Inserted {
    pub fn task(&self) -> &Task {
        match self {
            Inserted::Created(t) | Inserted::Existing(t) => t,
        }
    }
}

/// The outcome of [`Store::claim_task`]. Only `Claimed` changed anything.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The task is now assigned to the instance, with a new attempt number.
    Claimed(Box<Task>),
    /// Somebody else got there first, or the task ended.
    TaskNotQueued,
    /// The instance has no free slot.
    InstanceFull,
    /// No such instance (it was removed).
    InstanceGone,
    /// The instance takes no new task: it is draining, or a single-use instance that has
    /// taken its tasks.
    InstanceNotTaking,
    /// The task's concurrency key already has `running` tasks assigned or running in its
    /// account, and its limit is `limit`: the task waits (docs/rules.md, "Concurrency
    /// keys").
    Limited { key: String, running: u32, limit: u32 },
}

/// A fenced change of a task's state (every event but [`TaskEvent::Assign`], which is
/// [`Store::claim_task`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub task_id: TaskId,
    /// The attempt the caller believes current. `None` for operator and system actions
    /// that apply whatever the attempt (cancel, expire, the fail-fast of placement).
    pub fence: Option<Attempt>,
    /// The instance the caller says holds that attempt (a delegate's own report): refused
    /// with [`Conflict::NotHolder`] unless the task is assigned to it, so a delegate's
    /// report needs no read of the task before it.
    pub holder: Option<InstanceId>,
    pub event: TaskEvent,
    pub at: DateTime<Utc>,
    /// With `Fail`, `TimeOut` and `Release`/`Requeue`: why.
    pub failure: Option<Failure>,
    /// With `Succeed` and `Fail`: what the delegate reported.
    pub result: Option<serde_json::Value>,
}

impl Transition {
    pub fn new(task_id: TaskId, fence: Option<Attempt>, event: TaskEvent, at: DateTime<Utc>) -> Self {
        Self {
            task_id,
            fence,
            holder: None,
            event,
            at,
            failure: None,
            result: None,
        }
    }

    /// The same transition, allowed only to `instance` (see [`Transition::holder`]).
    pub fn held_by(self, instance: InstanceId) -> Self {
        Self {
            holder: Some(instance),
            ..self
        }
    }

    /// Whether `task` passes this transition's fences: the attempt it names is current
    /// and, when it names a holder, the task is assigned to that instance. Every backend
    /// checks through this, so they refuse alike.
    pub fn check_fences(&self, task: &Task) -> Result<(), Conflict> {
        if let Some(presented) = self.fence
            && presented != task.attempt
        {
            return Err(Conflict::StaleAttempt {
                presented,
                current: task.attempt,
            });
        }
        if let Some(holder) = self.holder
            && task.instance_id != Some(holder)
        {
            return Err(Conflict::NotHolder {
                attempt: task.attempt,
                state: task.state,
            });
        }
        Ok(())
    }
}

/// [`Store::instance_counts`]: instances recorded connected with a heartbeat at or after
/// the bound, those recorded connected with an older one (by id: a manager's own newer
/// heartbeats, not yet flushed, may make them fresh), and those not connected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceCounts {
    pub fresh: u64,
    pub stale: Vec<InstanceId>,
    pub disconnected: u64,
}

/// What [`Store::due_tasks`] looks for: the cut-off of each timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueQuery {
    /// Assign and run deadlines before this are due.
    pub now: DateTime<Utc>,
    /// Assigned before this and not acquired: the acknowledge timeout passed.
    pub unacknowledged_before: DateTime<Utc>,
    /// Held by an instance whose stored heartbeat is older than this: it is lost.
    pub heartbeat_before: DateTime<Utc>,
    /// At most this many of each kind.
    pub limit: u32,
}

/// The answer of [`Store::due_tasks`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DueTasks {
    /// Queued past the assign timeout: to expire.
    pub expired: Vec<Task>,
    /// Assigned and not acquired within the acknowledge timeout: to release.
    pub unacknowledged: Vec<Task>,
    /// Running past the run deadline: to time out.
    pub overrun: Vec<Task>,
    /// Assigned or running on an instance whose heartbeat is too old: to release or
    /// re-queue, as for an instance whose socket closed. A task may also be listed under
    /// another kind; the second change of it is refused by its fence.
    pub lost: Vec<Task>,
}

/// What [`Store::bootstrap_admin_key`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminKey {
    /// The store was fresh: the candidate is now the stored admin key.
    Created,
    /// An admin key was generated before (by this manager or another replica): its hash.
    Existing(SecretHash),
    /// No admin key was ever generated and the store already holds API keys or delegate
    /// tokens: it is not a first start, so none is generated now.
    NotFresh,
}

/// Which backend a store is, for logs, `/readyz` and metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// Everything Switchboard keeps. Implementations are cheap to share (`Arc<dyn Store>`)
/// and safe to call from many tasks at once.
///
/// Lists filtered by scope take `within`: `None` for everything, `Some(scope)` for the
/// resources at that scope or below it (see [`Scope::contains`]).
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    fn backend(&self) -> Backend;

    /// Ready to serve: the database answers and every migration this build knows is
    /// applied.
    async fn check_ready(&self) -> StoreResult<()>;

    // --- delegate tokens -------------------------------------------------------------

    /// Stores a new token. [`Conflict::Duplicate`] when its name is taken in its account.
    async fn create_token(&self, token: &DelegateToken, secret: &SecretHash) -> StoreResult<()>;
    async fn get_token(&self, id: TokenId) -> StoreResult<DelegateToken>;
    async fn token_by_secret(&self, secret: &SecretHash) -> StoreResult<Option<DelegateToken>>;
    /// The named tokens; JIT credentials (one per single-use instance) are left out.
    async fn list_tokens(&self, within: Option<&Scope>) -> StoreResult<Vec<DelegateToken>>;
    /// Uses a JIT credential for its one registration at `at`: `true` when it was unused
    /// and unexpired (it is now used), `false` otherwise. Atomic: of two registrations
    /// racing with one credential, one gets `true`.
    async fn use_jit_token(&self, id: TokenId, at: DateTime<Utc>) -> StoreResult<bool>;
    /// Deletes the JIT credentials that expired before `before` and that no instance
    /// registered with still exists. Returns how many.
    async fn remove_expired_jit_tokens(&self, before: DateTime<Utc>) -> StoreResult<u64>;
    /// Marks it revoked (again revoking is a no-op) and returns it.
    async fn revoke_token(&self, id: TokenId, at: DateTime<Utc>) -> StoreResult<DelegateToken>;

    // --- delegate groups and instances -----------------------------------------------

    /// Returns the group of that name in that scope, creating it with `tags` if absent.
    /// Safe under concurrency: two replicas registering at once join one group.
    async fn upsert_group(
        &self,
        scope: &Scope,
        name: &Ident,
        tags: &Selectors,
        at: DateTime<Utc>,
    ) -> StoreResult<DelegateGroup>;
    /// Stores a group an operator declares ahead of any instance (`group.declared` is
    /// set): registrations with its name join it, and it is never removed for being empty.
    /// [`Conflict::Duplicate`] when its name is taken in its scope.
    async fn declare_group(&self, group: &DelegateGroup) -> StoreResult<()>;
    async fn get_group(&self, id: GroupId) -> StoreResult<DelegateGroup>;
    async fn list_groups(&self, within: Option<&Scope>) -> StoreResult<Vec<DelegateGroup>>;
    async fn set_group_tags(&self, id: GroupId, tags: &Selectors) -> StoreResult<DelegateGroup>;
    async fn set_group_disabled(&self, id: GroupId, disabled: bool) -> StoreResult<DelegateGroup>;
    /// Pauses the whole group (`Some`) or lifts its pause (`None`).
    async fn set_group_pause(&self, id: GroupId, pause: Option<&Pause>) -> StoreResult<DelegateGroup>;
    /// Deletes the group and its instances.
    async fn delete_group(&self, id: GroupId) -> StoreResult<()>;

    /// Stores a new instance with the hash of its session credential.
    async fn register_instance(&self, instance: &DelegateInstance, session: &SecretHash) -> StoreResult<()>;
    /// Uses the JIT credential the instance registers with (its `token_id`) at `at` and
    /// stores the instance, in one transaction: `false`, with nothing stored, when the
    /// credential is used, expired or revoked. Of two registrations racing with one
    /// credential, one stores its instance; an insert that fails leaves it unused.
    async fn register_jit_instance(
        &self,
        instance: &DelegateInstance,
        session: &SecretHash,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    async fn get_instance(&self, id: InstanceId) -> StoreResult<DelegateInstance>;
    async fn instance_by_session(&self, session: &SecretHash) -> StoreResult<Option<DelegateInstance>>;
    /// The instances of one group, or of every group.
    async fn list_instances(&self, group: Option<GroupId>) -> StoreResult<Vec<DelegateInstance>>;
    /// The registry counted by liveness as the store records it (connections recorded by
    /// a live manager; heartbeats as flushed), in aggregate queries rather than a read of
    /// every row: what `/metrics` shows of a fleet of 100,000.
    async fn instance_counts(&self, stale_before: DateTime<Utc>) -> StoreResult<InstanceCounts>;
    /// Writes many heartbeats in one statement; a heartbeat never moves time backwards.
    /// Returns how many instances were updated.
    async fn record_heartbeats(&self, beats: &[(InstanceId, DateTime<Utc>)]) -> StoreResult<u64>;
    /// Records that this manager holds (`true`) or no longer holds (`false`) the socket of
    /// `id`. A connection counts only while the manager that recorded it renews its lease
    /// ([`Store::renew_lease`]). Letting go clears only a connection this manager
    /// recorded: `false` when another manager holds the instance's socket now (the delegate
    /// reconnected there, so it is not lost), `true` otherwise.
    async fn set_instance_connected(&self, id: InstanceId, connected: bool) -> StoreResult<bool>;
    /// Pauses one instance (`Some`) or lifts its own pause (`None`).
    async fn set_instance_pause(&self, id: InstanceId, pause: Option<&Pause>) -> StoreResult<DelegateInstance>;
    /// Records that the instance is draining: no claim is made for it from now on.
    async fn set_instance_draining(&self, id: InstanceId) -> StoreResult<DelegateInstance>;
    /// Removes the single-use instances that took all their tasks and hold none any more
    /// (each task ended, or went back to the queue); their groups remember `at` as the
    /// last time they had an instance. Returns the removed instances. A claim committed
    /// first keeps its instance (it then holds a task).
    async fn retire_spent_instances(&self, at: DateTime<Utc>) -> StoreResult<Vec<InstanceId>>;

    /// Keeps this manager's recorded connections counting for one more lease (a setting
    /// of the backend, taken first when the store opens), and stops counting (clears)
    /// those of managers whose lease lapsed: a manager that crashed leaves no instance
    /// looking connected for longer than its lease. Returns whether this manager's lease
    /// was still live; on `false` (after the store was out of reach for longer than the
    /// lease) the caller records its open sockets again. Where one manager owns the store
    /// (SQLite) there is no lease: the store forgets every recorded connection when it
    /// opens, and this answers `true`.
    async fn renew_lease(&self) -> StoreResult<bool>;

    /// Removes the instances whose last heartbeat is older than `before`, that have no
    /// open socket and hold no task; their groups remember `at` as the last time they had
    /// an instance. Returns the removed instances.
    async fn remove_silent_instances(&self, before: DateTime<Utc>, at: DateTime<Utc>) -> StoreResult<Vec<InstanceId>>;
    /// Removes the groups that have had no instance since before `before`, except those an
    /// operator declared. Returns them.
    async fn remove_empty_groups(&self, before: DateTime<Utc>) -> StoreResult<Vec<GroupId>>;

    // --- connectors --------------------------------------------------------------------

    /// [`Conflict::Duplicate`] when its name is taken in its scope.
    async fn create_connector(&self, connector: &Connector) -> StoreResult<()>;
    async fn get_connector(&self, id: ConnectorId) -> StoreResult<Connector>;
    async fn list_connectors(&self, within: Option<&Scope>) -> StoreResult<Vec<Connector>>;
    /// Replaces its name and selectors.
    async fn update_connector(&self, connector: &Connector) -> StoreResult<()>;
    async fn delete_connector(&self, id: ConnectorId) -> StoreResult<()>;
    async fn record_last_success(&self, success: &LastSuccess) -> StoreResult<()>;
    async fn last_success(&self, connector: ConnectorId) -> StoreResult<Option<LastSuccess>>;

    // --- tasks -----------------------------------------------------------------------

    // Every write on the task path goes through `write_tasks`: the methods below that
    // write one thing are shorthands for a batch of one item, and they join the same
    // batches as everyone else's (see [`committer`]).

    /// Commits `writes` with the next batch, in one transaction with whatever else is
    /// waiting; answers once it committed, one outcome per item, in order. An item that
    /// is refused changes nothing and does not affect the others; `Err` when the batch
    /// failed as a whole (then nothing of it is stored). See [`batch`].
    async fn write_tasks(&self, writes: Vec<TaskWrite>) -> StoreResult<Vec<StoreResult<Written>>>;

    /// Counts of the batches committed so far (`None` for a store that does not batch).
    fn batch_stats(&self) -> Option<BatchSnapshot> {
        None
    }

    /// Stores a queued task, or returns the one stored under the same idempotency key in
    /// the same account ([`Conflict::IdempotencyMismatch`] when the request differs).
    async fn insert_task(&self, task: &NewTask) -> StoreResult<Inserted> {
        let submission = Submission {
            task: task.clone(),
            claim: None,
            log: Vec::new(),
            log_if_claimed: Vec::new(),
            audit: None,
        };
        Ok(self.submit_task(submission).await?.inserted)
    }

    /// Stores a new task as [`Store::insert_task`] does, claimed at once by the instance
    /// the submission names (if it still has a free slot), with its log entries and audit
    /// row: one commit. The claim's outcome is `None` without a claim or for a replay.
    async fn submit_task(&self, submission: Submission) -> StoreResult<Stored> {
        match one(self, TaskWrite::Submit(Box::new(submission))).await? {
            Written::Submitted {
                inserted,
                claim,
                superseded,
            } => Ok(Stored {
                inserted,
                claim,
                superseded,
            }),
            other => Err(unexpected(&other)),
        }
    }
    async fn get_task(&self, id: TaskId) -> StoreResult<Task>;
    /// Newest first, filtered and paginated.
    async fn list_tasks(&self, query: &TaskQuery) -> StoreResult<Page<Task>>;
    /// Queued tasks, highest effective priority first (priority plus one per aging step
    /// waited: [`switchboard_domain::task::queue_key`]), then oldest first; not those
    /// whose retry is due after now.
    async fn queued_tasks(&self, account: Option<&Ident>, limit: u32) -> StoreResult<Vec<Task>>;
    /// The queue grouped by what placement decides on (see [`QueueShape`]), in one
    /// aggregate query: the count of every queued task the query matches, and the largest
    /// shapes.
    async fn queue_shapes(&self, query: &QueueQuery) -> StoreResult<QueueShapes>;
    /// How many tasks are assigned or running, per scope (those with none left out).
    async fn active_by_scope(&self) -> StoreResult<Vec<(Scope, u64)>>;
    /// How many tasks of concurrency key `key` in `account` are assigned or running.
    async fn concurrency_held(&self, account: &Ident, key: &str) -> StoreResult<u32>;
    /// The head of each share's queue, for a fair sweep (docs/rules.md, "Fair shares"):
    /// the scopes with queued tasks (each account, org and project with tasks of its own)
    /// after `after` in the order (account, org, project) by bytes, no org or project
    /// first; at most `shares` of them, and of each the first `max(2, rows / shares
    /// found)` tasks in [`Store::queued_tasks`]'s order (not those whose retry is due
    /// after now), so that a sweep reads about `rows` tasks however many shares wait.
    /// Grouped by share, shares in that order.
    async fn queue_heads(&self, after: Option<&Scope>, shares: u32, rows: u32) -> StoreResult<Vec<Task>>;

    /// Sets what operators say for one scope (replacing what was set before).
    async fn set_scope_policy(&self, policy: &ScopePolicy) -> StoreResult<()>;
    /// Removes what was set for `scope`; `NotFound` when nothing was.
    async fn delete_scope_policy(&self, scope: &Scope) -> StoreResult<()>;
    /// Every scope policy at or below `within` (every one without), by scope.
    async fn scope_policies(&self, within: Option<&Scope>) -> StoreResult<Vec<ScopePolicy>>;

    /// Assigns a queued task to an instance with a free slot, atomically: the task moves
    /// to `assigned` with the next attempt number and the instance's active count goes up
    /// by one, or nothing changes. Exactly once under any concurrency.
    async fn claim_task(&self, task: TaskId, instance: InstanceId, at: DateTime<Utc>) -> StoreResult<Claim> {
        let claim = ClaimWrite {
            task,
            instance,
            at,
            after: None,
            log_if_claimed: Vec::new(),
        };
        match one(self, TaskWrite::Claim(claim)).await? {
            Written::Claim(claim) => Ok(claim),
            other => Err(unexpected(&other)),
        }
    }

    /// Applies a fenced state change (see [`Transition`]), keeping the instance's active
    /// count and the attempt record in step. [`Conflict::StaleAttempt`] or
    /// [`Conflict::Transition`] when refused; nothing changes then.
    async fn transition_task(&self, transition: &Transition) -> StoreResult<Task> {
        match one(self, TaskWrite::Transition(Box::new(transition.clone()))).await? {
            Written::Task(task) => Ok(*task),
            other => Err(unexpected(&other)),
        }
    }

    /// Records progress of a running task, fenced by its attempt.
    async fn record_progress(
        &self,
        task: TaskId,
        attempt: Attempt,
        progress: &serde_json::Value,
        at: DateTime<Utc>,
    ) -> StoreResult<Task> {
        let write = TaskWrite::Progress {
            task,
            attempt,
            progress: progress.clone(),
            at,
        };
        match one(self, write).await? {
            Written::Task(task) => Ok(*task),
            other => Err(unexpected(&other)),
        }
    }

    async fn task_attempts(&self, task: TaskId) -> StoreResult<Vec<TaskAttempt>>;

    /// The tasks holding a slot of `instance` (assigned or running), for when it is lost.
    async fn tasks_held_by(&self, instance: InstanceId) -> StoreResult<Vec<Task>>;

    /// Tasks a timer is due for, at most `limit` of each kind, oldest due first: queued
    /// tasks past their assign deadline ([`Task::assign_deadline`] before `now`), assigned
    /// tasks assigned before `unacknowledged_before` (the acknowledge timeout), running
    /// tasks past their [`Task::run_deadline`], and tasks held by an instance whose last
    /// stored heartbeat is before `heartbeat_before` (lost by liveness).
    async fn due_tasks(&self, query: &DueQuery) -> StoreResult<DueTasks>;

    /// Pushes forward the run deadline of running tasks that heartbeats listed: for each
    /// `(task, attempt, at)` whose task is running that attempt, `run_deadline = at +
    /// execution timeout` (never moved backwards). One statement for the whole batch;
    /// entries for other attempts or states are ignored. Returns how many tasks changed.
    async fn extend_run_deadlines(&self, beats: &[(TaskId, Attempt, DateTime<Utc>)]) -> StoreResult<u64>;

    // --- capability results ------------------------------------------------------------

    /// Stores a check result, replacing the previous one for that instance and basis.
    async fn record_capability_result(&self, result: &CapabilityResult) -> StoreResult<()>;
    async fn capability_results(&self, instances: &[InstanceId]) -> StoreResult<Vec<CapabilityResult>>;

    // --- selection log -----------------------------------------------------------------

    async fn append_selection_log(&self, entries: &[SelectionLogEntry]) -> StoreResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        one(self, TaskWrite::Log(entries.to_vec())).await.map(|_| ())
    }
    /// Oldest first.
    async fn selection_log(&self, task: TaskId) -> StoreResult<Vec<SelectionLogEntry>>;
    /// Deletes entries older than `before`; returns how many.
    async fn prune_selection_log(&self, before: DateTime<Utc>) -> StoreResult<u64>;

    // --- secrets -----------------------------------------------------------------------

    /// Stores a new secret; [`Conflict::Duplicate`] when its name is taken in its scope.
    async fn create_secret(&self, secret: &TaskSecret) -> StoreResult<()>;
    async fn get_secret(&self, id: SecretId) -> StoreResult<TaskSecret>;
    /// The secrets at or below `within` (all without), by scope then name.
    async fn list_secrets(&self, within: Option<&Scope>) -> StoreResult<Vec<TaskSecret>>;
    /// Every secret of `account` named one of `names`, whatever its scope (the caller
    /// picks the one that serves a task).
    async fn secrets_named(&self, account: &Ident, names: &[Ident]) -> StoreResult<Vec<TaskSecret>>;
    /// The secrets of these ids that exist.
    async fn secrets_by_id(&self, ids: &[SecretId]) -> StoreResult<Vec<TaskSecret>>;
    /// Replaces what a secret holds, its description, version and `updated_at`, if its
    /// stored version is still `secret.version - 1` ([`Conflict::Changed`] otherwise: a
    /// concurrent replacement won).
    async fn replace_secret(&self, secret: &TaskSecret) -> StoreResult<()>;
    async fn delete_secret(&self, id: SecretId) -> StoreResult<()>;

    // --- task logs ---------------------------------------------------------------------

    /// Appends a chunk to a task's log (see [`switchboard_domain::tasklog`]), in the
    /// committer's batches like every write of the task path, fenced like every report of
    /// a delegate: [`Conflict::StaleAttempt`] unless the attempt is
    /// current, [`Conflict::NotHolder`] unless it is assigned to the instance and
    /// assigned or running; `NotFound("task")` for an unknown task. A chunk whose
    /// position is stored already changes nothing ([`Appended::AlreadyStored`]). Past
    /// the bound, the oldest tail chunks are cut and the marker counts them. Appends to
    /// one task take turns, so the bound holds under concurrent appends.
    async fn append_task_log(&self, append: &LogAppend) -> StoreResult<Appended> {
        match one(self, TaskWrite::AppendLog(Box::new(append.clone()))).await? {
            Written::LogAppended(appended) => Ok(appended),
            other => Err(unexpected(&other)),
        }
    }

    /// The chunks of a task's log from `from` on (inclusive), in order, until about
    /// `max_bytes` of text (always at least one chunk when there is one). An unknown task
    /// is `NotFound("task")`; a task without a log, an empty list.
    async fn task_log(&self, task: TaskId, from: LogPosition, max_bytes: usize) -> StoreResult<Vec<LogChunk>>;

    /// Deletes the logs of tasks whose log last grew before `before`, whole; returns how
    /// many logs.
    async fn prune_task_logs(&self, before: DateTime<Utc>) -> StoreResult<u64>;

    // --- audit log ---------------------------------------------------------------------

    /// Appends an entry; returns it with its id (increasing across the store).
    async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<AuditEntry> {
        match one(self, TaskWrite::Audit(Box::new(entry.clone()))).await? {
            Written::Audited(entry) => Ok(*entry),
            other => Err(unexpected(&other)),
        }
    }
    /// Entries newest first, filtered (see [`AuditQuery`]).
    async fn list_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>>;
    /// Deletes entries older than `before`; returns how many.
    async fn prune_audit(&self, before: DateTime<Utc>) -> StoreResult<u64>;

    // --- API keys ----------------------------------------------------------------------

    async fn create_api_key(&self, key: &ApiKey, secret: &SecretHash) -> StoreResult<()>;
    async fn api_key_by_secret(&self, secret: &SecretHash) -> StoreResult<Option<ApiKey>>;
    async fn list_api_keys(&self, within: Option<&Scope>) -> StoreResult<Vec<ApiKey>>;
    async fn revoke_api_key(&self, id: ApiKeyId, at: DateTime<Utc>) -> StoreResult<ApiKey>;

    /// The admin key of a manager started without `SWITCHBOARD_ADMIN_KEY`. Stores
    /// `candidate` if no admin key was generated before and the store holds no API key and
    /// no delegate token; otherwise answers what it finds. Atomic: of replicas starting
    /// together on a fresh store, exactly one gets [`AdminKey::Created`].
    async fn bootstrap_admin_key(&self, candidate: &SecretHash, at: DateTime<Utc>) -> StoreResult<AdminKey>;
}

/// How manager replicas sharing one store coordinate: the bus their signals travel on
/// (see [`cluster`]) and the leadership of the periodic work. Apart from [`Store`], which is
/// what is kept: nothing here is stored, and a store shared by no one (SQLite) answers
/// these without a database.
#[async_trait]
pub trait Replicas: Send + Sync + std::fmt::Debug {
    /// Sends `events`, published by the replica `origin`, to every replica listening on
    /// this store (the sender included: listeners skip their own origin). One call is one
    /// round trip whatever the number of events, so callers batch. A no-op where one
    /// manager owns the store (SQLite).
    async fn publish(&self, origin: uuid::Uuid, events: &[ClusterEvent]) -> StoreResult<()>;

    /// Starts listening for the signals of other replicas; `None` where there can be no
    /// other replica (SQLite).
    async fn subscribe(&self) -> StoreResult<Option<ClusterSignals>>;

    /// Whether this manager leads: the one replica at a time that runs the periodic work
    /// (timers, sweeps, retention). Cheap to call every tick. The lead passes to another
    /// replica by itself when its holder dies; with SQLite, the one manager always leads.
    async fn lead(&self) -> StoreResult<bool>;
}

/// A backend as it is opened: what it keeps ([`Store`]) and how the replicas on it
/// coordinate ([`Replicas`]), in one value. Every type that is both is one; an
/// `Arc<dyn Backing>` coerces to either trait.
pub trait Backing: Store + Replicas {}

impl<T: Store + Replicas + ?Sized> Backing for T {}

/// Writes one item through [`Store::write_tasks`] and returns its outcome.
async fn one<S: Store + ?Sized>(store: &S, write: TaskWrite) -> StoreResult<Written> {
    store
        .write_tasks(vec![write])
        .await?
        .pop()
        .unwrap_or_else(|| Err(StoreError::Internal("a batch of one write answered nothing".into())))
}

fn unexpected(written: &Written) -> StoreError {
    StoreError::Internal(format!(
        "a write answered with the outcome of another kind: {written:?}"
    ))
}
