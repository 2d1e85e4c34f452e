//! Task writes in batches: what a batch may hold, and how one is decided.
//!
//! Every write on the task path (a submission, a claim, a fenced transition, progress,
//! selection-log entries, audit rows) is a [`TaskWrite`]. A backend's
//! [`crate::Store::write_tasks`] takes many of them, from many callers, and commits them
//! in **one transaction**; the [`crate::committer::Committer`] is what gathers them.
//!
//! A backend does three things per batch, and only the first and last touch the database:
//!
//! 1. **Load**, with set-based reads and row locks: the tasks the items name (locked, in
//!    id order), the instances whose slots they use or free (locked, in id order, after
//!    the tasks: the lock order every transaction of a backend follows), the tasks already
//!    stored under the submissions' idempotency keys, the connectors they name. That is
//!    a [`Loaded`].
//! 2. **Plan** ([`plan`], pure, here): the items are applied in order to that loaded
//!    state, in memory, by the same rules as one write at a time (the domain's state
//!    machine, [`crate::Transition::check_fences`], the capacity check of a claim). Each
//!    item gets its own outcome; an item that is refused (stale attempt, not the holder,
//!    instance full, idempotency mismatch, a connector that does not exist) changes
//!    nothing and is refused alone. What the accepted items change is gathered in a
//!    [`Plan`]: rows to insert, rows to update, slot counts to move, log rows to append.
//! 3. **Write** the plan with multi-row statements (one per table, or on PostgreSQL one
//!    statement of `WITH` parts for all but the new tasks), and commit. A database
//!    error fails the whole batch and changes nothing (the transaction rolls back); no
//!    caller is answered before the commit.
//!
//! Planning once over the whole batch is what lets a batch of hundreds of items cost a
//! handful of round trips, and it keeps the backends from disagreeing: the rules live
//! here once.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use switchboard_domain::policy::{ConcurrencyStrategy, Ending};
use switchboard_domain::tasklog::{self, Appended, LogAppend};
use switchboard_domain::{
    Attempt, AuditEntry, ConnectorId, Failure, InstanceId, NewTask, SelectionKind, SelectionLogEntry, Task, TaskEvent,
    TaskId, TaskState,
};

use crate::{Claim, Conflict, Inserted, StoreError, StoreResult, Transition};

/// One write on the task path.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskWrite {
    /// Stores a new task, and may claim it at once for the instance the engine chose.
    Submit(Box<Submission>),
    /// Assigns a queued task to an instance with a free slot.
    Claim(ClaimWrite),
    /// A fenced change of state (every event but assign).
    Transition(Box<Transition>),
    /// Progress of a running task, fenced by its attempt.
    Progress {
        task: TaskId,
        attempt: Attempt,
        progress: serde_json::Value,
        at: DateTime<Utc>,
    },
    /// Selection-log entries, in order; refused whole when one names a task that does
    /// not exist.
    Log(Vec<SelectionLogEntry>),
    /// An audit row.
    Audit(Box<AuditEntry>),
    /// A chunk of a task's log, fenced by attempt and holder
    /// (see [`crate::Store::append_task_log`]).
    AppendLog(Box<LogAppend>),
}

/// A submission: the task, and what its first placement decided before it was stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    pub task: NewTask,
    /// The instance to assign the new task to, in the same commit. When it has no free
    /// slot (it filled up since the engine looked) or is gone, the task is stored queued
    /// and the outcome says why ([`Written::Submitted::claim`]).
    pub claim: Option<InstanceId>,
    /// Written with a task this item creates (not with an idempotent replay).
    pub log: Vec<SelectionLogEntry>,
    /// Written too when the claim holds (the assignment's entries).
    pub log_if_claimed: Vec<SelectionLogEntry>,
    /// The submission's audit row, written whatever the outcome but a refusal; its
    /// `status` is set here: 201 for a task created, 200 for a replay.
    pub audit: Option<AuditEntry>,
}

/// A claim, with the log entries that go with it when it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimWrite {
    pub task: TaskId,
    pub instance: InstanceId,
    pub at: DateTime<Utc>,
    /// Refused as [`Claim::TaskNotQueued`] unless the task's current attempt is this one
    /// (the attempt the caller decided on): then entries written with the claim, which
    /// name the new attempt, are right. `None`: whatever the attempt.
    pub after: Option<Attempt>,
    /// Written when the claim holds, after the task changes.
    pub log_if_claimed: Vec<SelectionLogEntry>,
}

/// What one [`TaskWrite`] did.
// A submission's answer holds a whole task; answers live only until their caller reads
// them, so they are not boxed for the sake of the smaller ones.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Written {
    /// `claim` is `None` when the submission asked for none or was a replay.
    /// `superseded`: the waiting tasks of its concurrency key it cancelled (strategy
    /// `cancel_older`).
    Submitted {
        inserted: Inserted,
        claim: Option<Claim>,
        superseded: Vec<TaskId>,
    },
    Claim(Claim),
    /// The task after a transition or progress.
    Task(Box<Task>),
    Logged,
    Audited(Box<AuditEntry>),
    /// A log chunk stored, or found stored before.
    LogAppended(Appended),
}

impl TaskWrite {
    /// The rows this item may add or change, for bounding a batch.
    pub fn rows(&self) -> usize {
        match self {
            TaskWrite::Submit(s) => 1 + s.log.len() + s.log_if_claimed.len() + usize::from(s.audit.is_some()),
            TaskWrite::Claim(c) => 2 + c.log_if_claimed.len(),
            TaskWrite::Transition(_) | TaskWrite::Progress { .. } | TaskWrite::Audit(_) => 1,
            TaskWrite::Log(entries) => entries.len().max(1),
            TaskWrite::AppendLog(_) => 2,
        }
    }

    /// About how many bytes this item carries, for bounding a batch (JSON documents
    /// counted by a walk, no serialization).
    pub fn approx_bytes(&self) -> usize {
        const ROW: usize = 256;
        let log = |entries: &[SelectionLogEntry]| {
            entries
                .iter()
                .map(|e| ROW + e.summary.len() + json_size(&e.detail))
                .sum::<usize>()
        };
        match self {
            TaskWrite::Submit(s) => {
                ROW + json_size(&s.task.payload)
                    + log(&s.log)
                    + log(&s.log_if_claimed)
                    + ROW * usize::from(s.audit.is_some())
            }
            TaskWrite::Claim(c) => ROW + log(&c.log_if_claimed),
            TaskWrite::Transition(t) => {
                ROW + t.result.as_ref().map_or(0, json_size) + t.failure.as_ref().map_or(0, |f| f.detail.len())
            }
            TaskWrite::Progress { progress, .. } => ROW + json_size(progress),
            TaskWrite::Log(entries) => log(entries),
            TaskWrite::Audit(_) => ROW,
            TaskWrite::AppendLog(a) => ROW + a.text.len(),
        }
    }

    /// The stored tasks this item names, into the list of what it needs of them.
    fn stored_tasks(&self, wanted: &mut Wanted) {
        match self {
            TaskWrite::Submit(_) | TaskWrite::Audit(_) => {}
            TaskWrite::Claim(c) => wanted.claimed.push(c.task),
            TaskWrite::Transition(t) => wanted.tasks.push(t.task_id),
            TaskWrite::Progress { task, .. } => wanted.tasks.push(*task),
            TaskWrite::Log(entries) => wanted.logged.extend(entries.iter().map(|e| e.task_id)),
            // Locked like a report's task: the fence is exact against a result in flight.
            TaskWrite::AppendLog(a) => wanted.tasks.push(a.task),
        }
    }

    /// Timestamps cut to what the backend keeps, so the tasks a batch answers with are
    /// the rows a later read returns.
    fn truncate_times(&mut self, precision: Precision) {
        let cut = |at: &mut DateTime<Utc>| *at = precision.truncate(*at);
        let cut_log = |entries: &mut Vec<SelectionLogEntry>| entries.iter_mut().for_each(|e| cut(&mut e.at));
        match self {
            TaskWrite::Submit(s) => {
                cut(&mut s.task.created_at);
                cut_log(&mut s.log);
                cut_log(&mut s.log_if_claimed);
                if let Some(a) = &mut s.audit {
                    cut(&mut a.at);
                }
            }
            TaskWrite::Claim(c) => {
                cut(&mut c.at);
                cut_log(&mut c.log_if_claimed);
            }
            TaskWrite::Transition(t) => cut(&mut t.at),
            TaskWrite::Progress { at, .. } => cut(at),
            TaskWrite::Log(entries) => cut_log(entries),
            TaskWrite::Audit(a) => cut(&mut a.at),
            TaskWrite::AppendLog(a) => cut(&mut a.stored_at),
        }
    }
}

/// About the size of `value` as JSON text.
fn json_size(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    match value {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 20,
        Value::String(s) => s.len() + 2,
        Value::Array(items) => 2 + items.iter().map(|v| json_size(v) + 1).sum::<usize>(),
        Value::Object(fields) => 2 + fields.iter().map(|(k, v)| k.len() + 4 + json_size(v)).sum::<usize>(),
    }
}

/// How finely a backend stores timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Micros,
    Millis,
}

impl Precision {
    pub fn truncate(self, at: DateTime<Utc>) -> DateTime<Utc> {
        let step = match self {
            Precision::Micros => 1_000,
            Precision::Millis => 1_000_000,
        };
        let nanos = at.timestamp_subsec_nanos();
        at - chrono::Duration::nanoseconds(i64::from(nanos % step))
    }
}

/// What a backend must read before planning `writes` (step 1 of the module's recipe).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Wanted {
    /// Stored tasks the items change by a transition or progress, sorted and without
    /// repeats: lock them in this order, waiting for other writers.
    pub tasks: Vec<TaskId>,
    /// Tasks only claims name (not in `tasks`), sorted: lock them without waiting (`SKIP
    /// LOCKED`); one held by another transaction is being claimed or ended elsewhere, and
    /// goes in [`Loaded::busy`].
    pub claimed: Vec<TaskId>,
    /// Tasks only log entries name (in neither list above): their existence is all a log
    /// entry needs, read without a lock.
    pub logged: Vec<TaskId>,
    /// `(account, key)` of the submissions' idempotency keys.
    pub idempotency: Vec<(String, String)>,
    /// Connectors the submissions name.
    pub connectors: Vec<ConnectorId>,
    /// Instances the claims name. Add the instances of the loaded tasks a transition may
    /// free a slot of ([`Wanted::instances`]) before reading them.
    pub claimed_instances: Vec<InstanceId>,
    /// Tasks named by a transition that may free a slot (any but an acquire, which keeps
    /// the task on its instance): only their instances are read and locked, so a batch
    /// of acquires leaves the hot instance rows alone.
    pub freeing: Vec<TaskId>,
    /// Tasks claims name, sorted: their concurrency keys are counted
    /// ([`Wanted::concurrency_keys`]).
    pub claiming: Vec<TaskId>,
    /// `(account, key)` of the submissions that claim at once and carry a concurrency key.
    pub submitted_keys: Vec<(String, String)>,
    /// `(account, key)` of the submissions whose strategy cancels the key's waiting tasks:
    /// load those ([`Loaded::waiting_by_key`]), locked without waiting.
    pub superseding: Vec<(String, String)>,
}

impl Wanted {
    /// Truncates the items' timestamps to the backend's precision and says what to load.
    pub fn of(writes: &mut [TaskWrite], precision: Precision) -> Wanted {
        let mut wanted = Wanted::default();
        for w in writes.iter_mut() {
            w.truncate_times(precision);
            w.stored_tasks(&mut wanted);
            match w {
                TaskWrite::Submit(s) => {
                    if let Some(i) = &s.task.idempotency {
                        wanted
                            .idempotency
                            .push((s.task.scope.account_id().as_str().to_owned(), i.key.clone()));
                    }
                    wanted.connectors.extend(s.task.connector_id);
                    wanted.claimed_instances.extend(s.claim);
                    if let Some(c) = &s.task.concurrency {
                        let key = (s.task.scope.account_id().as_str().to_owned(), c.key.clone());
                        if c.strategy == ConcurrencyStrategy::CancelOlder {
                            wanted.superseding.push(key.clone());
                        }
                        if s.claim.is_some() {
                            wanted.submitted_keys.push(key);
                        }
                    }
                }
                TaskWrite::Claim(c) => {
                    wanted.claimed_instances.push(c.instance);
                    wanted.claiming.push(c.task);
                }
                TaskWrite::Transition(t) if t.event != TaskEvent::Acquire => wanted.freeing.push(t.task_id),
                _ => {}
            }
        }
        wanted.freeing.sort_unstable();
        wanted.freeing.dedup();
        wanted.tasks.sort_unstable();
        wanted.tasks.dedup();
        wanted.claimed.sort_unstable();
        wanted.claimed.dedup();
        wanted.claimed.retain(|t| wanted.tasks.binary_search(t).is_err());
        wanted.logged.sort_unstable();
        wanted.logged.dedup();
        wanted
            .logged
            .retain(|t| wanted.tasks.binary_search(t).is_err() && wanted.claimed.binary_search(t).is_err());
        wanted.connectors.sort_unstable();
        wanted.connectors.dedup();
        wanted.claiming.sort_unstable();
        wanted.claiming.dedup();
        wanted.superseding.sort_unstable();
        wanted.superseding.dedup();
        wanted
    }

    /// The `(account, key)` of every concurrency key the batch's claims may use, sorted
    /// (lock them in this order, after the instances, and count what holds each): those of
    /// the submissions and those of the loaded tasks the claims name.
    pub fn concurrency_keys<'t>(&self, tasks: impl IntoIterator<Item = &'t Task>) -> Vec<(String, String)> {
        let mut keys = self.submitted_keys.clone();
        keys.extend(
            tasks
                .into_iter()
                .filter(|t| self.claiming.binary_search(&t.id()).is_ok())
                .filter_map(|t| {
                    let c = t.spec.concurrency.as_ref()?;
                    Some((t.spec.scope.account_id().as_str().to_owned(), c.key.clone()))
                }),
        );
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// Every instance to read (and lock, in this order): those claimed and those holding
    /// the loaded tasks a transition may free.
    pub fn instances<'t>(&self, tasks: impl IntoIterator<Item = &'t Task>) -> Vec<InstanceId> {
        let mut ids: Vec<InstanceId> = self.claimed_instances.clone();
        ids.extend(
            tasks
                .into_iter()
                .filter(|t| self.freeing.binary_search(&t.id()).is_ok())
                .filter_map(|t| t.instance_id),
        );
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// An instance's slots, as loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slots {
    pub active: u32,
    pub capacity: u32,
    /// `false` once it is draining: no claim for it then.
    pub taking: bool,
    /// How many more tasks a single-use instance may take (`max_tasks - tasks_taken`);
    /// `None` for no limit.
    pub tasks_left: Option<u32>,
}

impl Slots {
    /// An instance that takes tasks, without a limit of tasks in its life.
    pub fn open(active: u32, capacity: u32) -> Self {
        Slots {
            active,
            capacity,
            taking: true,
            tasks_left: None,
        }
    }
}

/// What a backend read for a batch (step 1).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loaded {
    pub tasks: HashMap<TaskId, Task>,
    /// Tasks a claim names that another transaction holds locked: the claim answers
    /// [`Claim::TaskNotQueued`], as it would once that transaction claims or ends it.
    pub busy: HashSet<TaskId>,
    /// Tasks only log entries name that exist.
    pub exist: HashSet<TaskId>,
    pub instances: HashMap<InstanceId, Slots>,
    /// The tasks stored under the submissions' idempotency keys, by `(account, key)`.
    pub by_idempotency: HashMap<(String, String), Task>,
    pub connectors: HashSet<ConnectorId>,
    /// For each of [`Wanted::concurrency_keys`], how many tasks of the key are assigned or
    /// running (a key with none may be absent), read after the key was locked.
    pub held_by_key: HashMap<(String, String), u32>,
    /// For each of [`Wanted::superseding`], the key's queued tasks that could be locked
    /// (each also in [`Loaded::tasks`]); one locked elsewhere is being claimed or ended
    /// there, and is left to that.
    pub waiting_by_key: HashMap<(String, String), Vec<TaskId>>,
}

/// An attempt row to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAttempt {
    pub task: TaskId,
    pub attempt: Attempt,
    pub instance: InstanceId,
    pub assigned_at: DateTime<Utc>,
    pub acquired_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub outcome: Option<TaskState>,
    pub failure: Option<Failure>,
    pub retry_at: Option<DateTime<Utc>>,
}

/// A change of a stored attempt row: fields to set where `Some`.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptChange {
    pub task: TaskId,
    pub attempt: Attempt,
    pub acquired_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub outcome: Option<TaskState>,
    pub failure: Option<Failure>,
    pub retry_at: Option<DateTime<Utc>>,
}

/// What the accepted items of a batch change (step 3 writes it), and each item's answer.
#[derive(Debug, Default)]
pub struct Plan {
    /// One answer per item, in order.
    pub outcomes: Vec<StoreResult<Written>>,
    /// New tasks, in their state after the batch (a submission claimed at once is
    /// inserted assigned), in submission order.
    pub inserts: Vec<Task>,
    /// Stored tasks that changed, in their state after the batch, each once.
    pub updates: Vec<Task>,
    /// Per instance, how much its active count moves (never zero here).
    pub slot_changes: Vec<(InstanceId, i64)>,
    /// Per instance with a limit of tasks in its life, how many it was assigned by this
    /// batch (its `tasks_taken` goes up by that much).
    pub taken: Vec<(InstanceId, i64)>,
    pub new_attempts: Vec<NewAttempt>,
    pub attempt_changes: Vec<AttemptChange>,
    /// In order.
    pub log: Vec<SelectionLogEntry>,
    /// In order; their ids are the backend's to give.
    pub audits: Vec<AuditEntry>,
    /// For each of [`Plan::audits`], the outcome that answers with it (an `Audit` item's),
    /// or `None` (a submission's row).
    audit_answers: Vec<Option<usize>>,
    /// Log chunks past their fence, in order, each with the index of its outcome: the
    /// backend writes them and sets that outcome to what the write found
    /// ([`Plan::log_appended`]), stored or stored before.
    pub log_appends: Vec<(usize, LogAppend)>,
}

impl Plan {
    /// Whether the batch writes nothing (every item refused, or none).
    pub fn is_empty(&self) -> bool {
        self.inserts.is_empty()
            && self.updates.is_empty()
            && self.slot_changes.is_empty()
            && self.taken.is_empty()
            && self.new_attempts.is_empty()
            && self.attempt_changes.is_empty()
            && self.log.is_empty()
            && self.audits.is_empty()
            && self.log_appends.is_empty()
    }

    /// Says, in the outcome of the log chunk at `index`, that it was stored before.
    pub fn log_appended(&mut self, index: usize, appended: Appended) {
        if let Some(outcome) = self.outcomes.get_mut(index) {
            *outcome = Ok(Written::LogAppended(appended));
        }
    }

    /// Gives the audit rows their stored ids (in the order of [`Plan::audits`]) in the
    /// answers that return them.
    pub fn number_audits(&mut self, ids: &[i64]) {
        for (answer, id) in self.audit_answers.iter().zip(ids) {
            if let Some(at) = answer
                && let Some(Ok(Written::Audited(entry))) = self.outcomes.get_mut(*at)
            {
                entry.id = *id;
            }
        }
    }
}

/// Applies `writes` in order to `loaded` (step 2): each item's outcome and, for the
/// accepted ones, the rows to write.
///
/// Takes the writes by reference, so a backend can plan the same batch again after a
/// retryable failure (a deadlock, a race on an idempotency key with another replica).
pub fn plan(writes: &[TaskWrite], mut loaded: Loaded) -> Plan {
    let mut p = Planner::default();
    let mut outcomes = Vec::with_capacity(writes.len());
    for w in writes {
        let outcome = match w.clone() {
            TaskWrite::Submit(s) => p.submit(*s, &mut loaded),
            TaskWrite::Claim(c) => p.claim(c, &mut loaded).map(Written::Claim),
            TaskWrite::Transition(t) => p.transition(&t, &mut loaded),
            TaskWrite::Progress {
                task,
                attempt,
                progress,
                at,
            } => p.progress(task, attempt, progress, at, &mut loaded),
            TaskWrite::Log(entries) => p.log(entries, &loaded),
            // Refused alone rather than failing the batch on the schema's check.
            TaskWrite::Audit(entry) if !(100..=599).contains(&entry.status) => Err(StoreError::Internal(format!(
                "an audit row with status {} (not an HTTP status)",
                entry.status
            ))),
            TaskWrite::Audit(entry) => {
                p.plan.audits.push((*entry).clone());
                p.plan.audit_answers.push(Some(outcomes.len()));
                Ok(Written::Audited(entry))
            }
            TaskWrite::AppendLog(append) => p.append_log(*append, outcomes.len(), &loaded),
        };
        outcomes.push(outcome);
    }
    p.finish(outcomes, loaded)
}

#[derive(Default)]
struct Planner {
    plan: Plan,
    /// Ids of the tasks inserted by this batch (their rows are in `plan.inserts`, and
    /// also in `Loaded::tasks` while the batch is planned).
    inserted: HashSet<TaskId>,
    /// Stored tasks changed by this batch.
    changed: HashSet<TaskId>,
    slots: HashMap<InstanceId, i64>,
    taken: HashMap<InstanceId, i64>,
    /// Where each attempt inserted by this batch is in `plan.new_attempts`.
    new_attempt_at: HashMap<(TaskId, Attempt), usize>,
}

impl Planner {
    fn submit(&mut self, s: Submission, loaded: &mut Loaded) -> StoreResult<Written> {
        let Submission {
            task: spec,
            claim,
            log,
            log_if_claimed,
            audit,
        } = s;
        let account = spec.scope.account_id().as_str().to_owned();
        if let Some(idem) = &spec.idempotency
            && let Some(existing) = loaded.by_idempotency.get(&(account.clone(), idem.key.clone()))
        {
            let same = existing
                .spec
                .idempotency
                .as_ref()
                .is_some_and(|prev| prev.fingerprint == idem.fingerprint);
            if !same {
                return Err(Conflict::IdempotencyMismatch(idem.key.clone()).into());
            }
            // The task as it is now: a replay in the same batch as its original sees what
            // the original's claim made of it.
            let existing = loaded.tasks.get(&existing.id()).unwrap_or(existing).clone();
            self.audit(audit, 200);
            return Ok(Written::Submitted {
                inserted: Inserted::Existing(existing),
                claim: None,
                superseded: Vec::new(),
            });
        }
        if let Some(connector) = spec.connector_id
            && !loaded.connectors.contains(&connector)
        {
            return Err(StoreError::NotFound("connector"));
        }
        if loaded.tasks.contains_key(&spec.id) {
            return Err(Conflict::Duplicate {
                what: "task",
                name: spec.id.to_string(),
            }
            .into());
        }
        let task = Task::queued(spec);
        let id = task.id();
        if let Some(idem) = &task.spec.idempotency {
            loaded
                .by_idempotency
                .insert((account.clone(), idem.key.clone()), task.clone());
        }
        let superseded = self.supersede(&task, loaded);
        if let Some(c) = &task.spec.concurrency {
            // A later submission of the batch that cancels older ones sees this one too.
            if let Some(waiting) = loaded.waiting_by_key.get_mut(&(account, c.key.clone())) {
                waiting.push(id);
            }
        }
        loaded.tasks.insert(id, task);
        self.inserted.insert(id);
        let created_at = loaded.tasks[&id].spec.created_at;
        self.plan.log.extend(log);
        let claimed = claim.map(|instance| {
            self.claim(
                ClaimWrite {
                    task: id,
                    instance,
                    at: created_at,
                    after: Some(Attempt::NONE),
                    log_if_claimed,
                },
                loaded,
            )
            .unwrap_or(Claim::TaskNotQueued)
        });
        self.audit(audit, 201);
        let task = loaded.tasks[&id].clone();
        Ok(Written::Submitted {
            inserted: Inserted::Created(task),
            claim: claimed,
            superseded,
        })
    }

    /// Cancels the waiting tasks of `task`'s concurrency key when its strategy says so
    /// (`cancel_older`), each with a log entry naming the task that superseded it.
    fn supersede(&mut self, task: &Task, loaded: &mut Loaded) -> Vec<TaskId> {
        let Some(c) = task
            .spec
            .concurrency
            .as_ref()
            .filter(|c| c.strategy == ConcurrencyStrategy::CancelOlder)
        else {
            return Vec::new();
        };
        let key = (task.spec.scope.account_id().as_str().to_owned(), c.key.clone());
        let at = task.spec.created_at;
        let mut cancelled = Vec::new();
        for old in loaded.waiting_by_key.get(&key).cloned().unwrap_or_default() {
            let Some(waiting) = loaded.tasks.get_mut(&old) else {
                continue;
            };
            if waiting.state != TaskState::Queued || waiting.apply(TaskEvent::Cancel, at, None, None).is_err() {
                continue;
            }
            let attempt = waiting.attempt;
            self.touched(old);
            self.plan.log.push(SelectionLogEntry {
                task_id: old,
                attempt,
                at,
                kind: SelectionKind::Ended,
                summary: format!(
                    "cancelled: superseded by task {} of concurrency key {} (strategy cancel_older)",
                    task.id(),
                    c.key
                ),
                detail: serde_json::json!({"superseded_by": task.id(), "concurrency_key": c.key}),
            });
            cancelled.push(old);
        }
        if let Some(waiting) = loaded.waiting_by_key.get_mut(&key) {
            waiting.retain(|t| !cancelled.contains(t));
        }
        cancelled
    }

    fn audit(&mut self, audit: Option<AuditEntry>, status: u16) {
        if let Some(mut entry) = audit {
            entry.status = status;
            self.plan.audits.push(entry);
            self.plan.audit_answers.push(None);
        }
    }

    fn claim(&mut self, c: ClaimWrite, loaded: &mut Loaded) -> StoreResult<Claim> {
        if loaded.busy.contains(&c.task) {
            return Ok(Claim::TaskNotQueued);
        }
        let Some(task) = loaded.tasks.get_mut(&c.task) else {
            return Err(StoreError::NotFound("task"));
        };
        if task.state != TaskState::Queued || c.after.is_some_and(|a| a != task.attempt) {
            return Ok(Claim::TaskNotQueued);
        }
        let key = task.spec.concurrency.as_ref().map(|k| {
            (
                (task.spec.scope.account_id().as_str().to_owned(), k.key.clone()),
                k.limit,
            )
        });
        if let Some((key, limit)) = &key {
            let running = loaded.held_by_key.get(key).copied().unwrap_or(0);
            if running >= *limit {
                return Ok(Claim::Limited {
                    key: key.1.clone(),
                    running,
                    limit: *limit,
                });
            }
        }
        let Some(slots) = loaded.instances.get_mut(&c.instance) else {
            return Ok(Claim::InstanceGone);
        };
        if !slots.taking || slots.tasks_left == Some(0) {
            return Ok(Claim::InstanceNotTaking);
        }
        if slots.active >= slots.capacity {
            return Ok(Claim::InstanceFull);
        }
        slots.active += 1;
        *self.slots.entry(c.instance).or_default() += 1;
        if let Some(left) = &mut slots.tasks_left {
            *left -= 1;
            *self.taken.entry(c.instance).or_default() += 1;
        }
        if let Some((key, _)) = key {
            *loaded.held_by_key.entry(key).or_default() += 1;
        }
        task.state = TaskState::Assigned;
        task.attempt = task.attempt.next();
        task.instance_id = Some(c.instance);
        task.assigned_at = Some(c.at);
        task.updated_at = c.at;
        let (id, attempt) = (task.id(), task.attempt);
        let claimed = task.clone();
        self.touched(id);
        self.new_attempt_at.insert((id, attempt), self.plan.new_attempts.len());
        self.plan.new_attempts.push(NewAttempt {
            task: id,
            attempt,
            instance: c.instance,
            assigned_at: c.at,
            acquired_at: None,
            ended_at: None,
            outcome: None,
            failure: None,
            retry_at: None,
        });
        self.plan.log.extend(c.log_if_claimed);
        Ok(Claim::Claimed(Box::new(claimed)))
    }

    fn transition(&mut self, t: &Transition, loaded: &mut Loaded) -> StoreResult<Written> {
        let task = loaded.tasks.get_mut(&t.task_id).ok_or(StoreError::NotFound("task"))?;
        t.check_fences(task)?;
        let from = task.state;
        let mut next = task.clone();
        let applied = next
            .apply(t.event, t.at, t.failure.clone(), t.result.clone())
            .map_err(Conflict::from)?;
        *task = next;
        let (id, attempt, to) = (task.id(), task.attempt, task.state);
        let answer = task.clone();
        if applied.freed.is_some()
            && let Some(c) = &answer.spec.concurrency
            && let Some(held) = loaded
                .held_by_key
                .get_mut(&(answer.spec.scope.account_id().as_str().to_owned(), c.key.clone()))
        {
            *held = held.saturating_sub(1);
        }
        self.touched(id);
        if let Some(instance) = applied.freed
            && let Some(slots) = loaded.instances.get_mut(&instance)
        {
            // The instance may have been removed meanwhile: then there is no slot to free.
            if slots.active > 0 {
                slots.active -= 1;
                *self.slots.entry(instance).or_default() -= 1;
            }
        }
        let acquired_at = (t.event == TaskEvent::Acquire).then_some(t.at);
        let ended = from.holds_instance() && !to.holds_instance();
        if acquired_at.is_some() || ended {
            // A retried run ended as its ending says (the task went back to the queue).
            let outcome = match &applied.retried {
                Some((Ending::Failed, _)) => TaskState::Failed,
                Some((Ending::TimedOut, _)) => TaskState::TimedOut,
                _ => to,
            };
            let failure = match applied.retried {
                Some((_, failure)) => failure,
                None => answer.failure.clone().filter(|_| to.is_terminal()),
            };
            self.change_attempt(AttemptChange {
                task: id,
                attempt,
                acquired_at,
                ended_at: ended.then_some(t.at),
                outcome: ended.then_some(outcome),
                failure: failure.filter(|_| ended),
                retry_at: answer.retry_at.filter(|_| ended && to == TaskState::Queued),
            });
        }
        Ok(Written::Task(Box::new(answer)))
    }

    fn progress(
        &mut self,
        id: TaskId,
        attempt: Attempt,
        progress: serde_json::Value,
        at: DateTime<Utc>,
        loaded: &mut Loaded,
    ) -> StoreResult<Written> {
        let task = loaded.tasks.get_mut(&id).ok_or(StoreError::NotFound("task"))?;
        // A stale attempt wins over the state: the reporter's view is what is out of date.
        if task.attempt != attempt {
            return Err(Conflict::StaleAttempt {
                presented: attempt,
                current: task.attempt,
            }
            .into());
        }
        if task.state != TaskState::Running {
            return Err(Conflict::TaskState(task.state).into());
        }
        task.progress = Some(progress);
        task.updated_at = at;
        let answer = task.clone();
        self.touched(id);
        Ok(Written::Task(Box::new(answer)))
    }

    fn log(&mut self, entries: Vec<SelectionLogEntry>, loaded: &Loaded) -> StoreResult<Written> {
        if entries
            .iter()
            .any(|e| !loaded.tasks.contains_key(&e.task_id) && !loaded.exist.contains(&e.task_id))
        {
            return Err(StoreError::NotFound("task"));
        }
        self.plan.log.extend(entries);
        Ok(Written::Logged)
    }

    fn append_log(&mut self, append: LogAppend, index: usize, loaded: &Loaded) -> StoreResult<Written> {
        let task = loaded.tasks.get(&append.task).ok_or(StoreError::NotFound("task"))?;
        // The task as this batch left it so far: a result earlier in it ends the attempt.
        tasklog::check_append(
            append.at.attempt,
            append.instance,
            task.attempt,
            task.instance_id,
            task.state,
        )
        .map_err(|refused| crate::append_refused(append.at.attempt, refused))?;
        self.plan.log_appends.push((index, append));
        // Until the write says whether it was stored before.
        Ok(Written::LogAppended(Appended::Stored))
    }

    fn touched(&mut self, id: TaskId) {
        if !self.inserted.contains(&id) {
            self.changed.insert(id);
        }
    }

    fn change_attempt(&mut self, change: AttemptChange) {
        if let Some(&at) = self.new_attempt_at.get(&(change.task, change.attempt)) {
            let row = &mut self.plan.new_attempts[at];
            row.acquired_at = change.acquired_at.or(row.acquired_at);
            row.ended_at = change.ended_at.or(row.ended_at);
            row.outcome = change.outcome.or(row.outcome);
            row.failure = change.failure.or(row.failure.take());
            row.retry_at = change.retry_at.or(row.retry_at);
            return;
        }
        if let Some(row) = self
            .plan
            .attempt_changes
            .iter_mut()
            .find(|r| r.task == change.task && r.attempt == change.attempt)
        {
            row.acquired_at = change.acquired_at.or(row.acquired_at);
            row.ended_at = change.ended_at.or(row.ended_at);
            row.outcome = change.outcome.or(row.outcome);
            row.failure = change.failure.or(row.failure.take());
            row.retry_at = change.retry_at.or(row.retry_at);
            return;
        }
        self.plan.attempt_changes.push(change);
    }

    fn finish(mut self, outcomes: Vec<StoreResult<Written>>, mut loaded: Loaded) -> Plan {
        self.plan.outcomes = outcomes;
        // Inserted in submission order: the order of `Submit` items among the outcomes.
        let mut inserts: Vec<Task> = Vec::with_capacity(self.inserted.len());
        for outcome in &self.plan.outcomes {
            if let Ok(Written::Submitted {
                inserted: Inserted::Created(t),
                ..
            }) = outcome
                && let Some(task) = loaded.tasks.remove(&t.id())
            {
                inserts.push(task);
            }
        }
        self.plan.inserts = inserts;
        let mut changed: Vec<TaskId> = self.changed.into_iter().collect();
        changed.sort_unstable();
        self.plan.updates = changed.into_iter().filter_map(|id| loaded.tasks.remove(&id)).collect();
        let mut slots: Vec<(InstanceId, i64)> = self.slots.into_iter().filter(|(_, d)| *d != 0).collect();
        slots.sort_unstable_by_key(|(id, _)| *id);
        self.plan.slot_changes = slots;
        let mut taken: Vec<(InstanceId, i64)> = self.taken.into_iter().collect();
        taken.sort_unstable_by_key(|(id, _)| *id);
        self.plan.taken = taken;
        self.plan
    }
}

#[cfg(test)]
mod tests {
    use switchboard_domain::task::limits;
    use switchboard_domain::{Idempotency, Ident, Scope, Selectors, TaskType};

    use super::*;

    fn new_task(key: Option<&str>) -> NewTask {
        NewTask {
            id: TaskId::new(),
            scope: Scope::parse_path("acme").expect("scope"),
            task_type: TaskType(Ident::parse("echo").expect("type")),
            payload: serde_json::json!({}),
            selectors: Selectors::new(),
            connector_id: None,
            capabilities: vec![],
            priority: 0,
            assign_timeout: limits::DEFAULT_ASSIGN_TIMEOUT,
            execution_timeout: limits::DEFAULT_EXECUTION_TIMEOUT,
            max_attempts: 1,
            wait_for_delegate: false,
            idempotency: key.map(|k| Idempotency {
                key: k.into(),
                fingerprint: "f".into(),
            }),
            created_at: Utc::now(),
            concurrency: None,
            retry: None,
            secrets: Vec::new(),
        }
    }

    fn loaded(tasks: &[&Task], instances: &[(InstanceId, u32, u32)]) -> Loaded {
        Loaded {
            tasks: tasks.iter().map(|t| (t.id(), (*t).clone())).collect(),
            instances: instances
                .iter()
                .map(|&(id, active, capacity)| (id, Slots::open(active, capacity)))
                .collect(),
            ..Loaded::default()
        }
    }

    fn claim(task: TaskId, instance: InstanceId) -> TaskWrite {
        TaskWrite::Claim(ClaimWrite {
            task,
            instance,
            at: Utc::now(),
            after: None,
            log_if_claimed: vec![],
        })
    }

    #[test]
    fn claims_in_one_batch_count_the_slots_the_batch_already_took() {
        let (a, b, c) = (
            Task::queued(new_task(None)),
            Task::queued(new_task(None)),
            Task::queued(new_task(None)),
        );
        let i = InstanceId::new();
        let writes = vec![claim(a.id(), i), claim(a.id(), i), claim(b.id(), i), claim(c.id(), i)];
        let plan = plan(&writes, loaded(&[&a, &b, &c], &[(i, 0, 2)]));
        let claims: Vec<_> = plan
            .outcomes
            .iter()
            .map(|o| match o {
                Ok(Written::Claim(Claim::Claimed(_))) => "claimed",
                Ok(Written::Claim(Claim::TaskNotQueued)) => "not queued",
                Ok(Written::Claim(Claim::InstanceFull)) => "full",
                _ => "other",
            })
            .collect();
        assert_eq!(claims, ["claimed", "not queued", "claimed", "full"]);
        assert_eq!(plan.slot_changes, vec![(i, 2)]);
        assert_eq!(plan.new_attempts.len(), 2);
        assert_eq!(plan.updates.len(), 2, "each changed task written once");
    }

    #[test]
    fn a_task_claimed_and_ended_in_one_batch_writes_one_attempt_row_and_no_slot() {
        let t = Task::queued(new_task(None));
        let i = InstanceId::new();
        let at = Utc::now();
        let writes = vec![
            claim(t.id(), i),
            TaskWrite::Transition(Box::new(Transition::new(
                t.id(),
                Some(Attempt(1)),
                TaskEvent::Acquire,
                at,
            ))),
            TaskWrite::Transition(Box::new(
                Transition::new(t.id(), Some(Attempt(1)), TaskEvent::Succeed, at).held_by(i),
            )),
        ];
        let plan = plan(&writes, loaded(&[&t], &[(i, 0, 1)]));
        assert!(plan.outcomes.iter().all(Result::is_ok), "{:?}", plan.outcomes);
        assert_eq!(plan.updates[0].state, TaskState::Succeeded);
        assert!(
            plan.slot_changes.is_empty(),
            "the slot taken is given back: {:?}",
            plan.slot_changes
        );
        assert!(plan.attempt_changes.is_empty());
        let row = &plan.new_attempts[0];
        assert_eq!(
            (row.acquired_at, row.ended_at, row.outcome),
            (Some(at), Some(at), Some(TaskState::Succeeded))
        );
    }

    #[test]
    fn a_replay_in_the_batch_of_its_original_answers_the_original_as_claimed() {
        let first = new_task(Some("k"));
        let replay = NewTask {
            id: TaskId::new(),
            ..first.clone()
        };
        let i = InstanceId::new();
        let submit = |t: NewTask| {
            TaskWrite::Submit(Box::new(Submission {
                task: t,
                claim: Some(i),
                log: vec![],
                log_if_claimed: vec![],
                audit: None,
            }))
        };
        let plan = plan(&[submit(first.clone()), submit(replay)], loaded(&[], &[(i, 0, 5)]));
        assert!(matches!(
            &plan.outcomes[1],
            Ok(Written::Submitted { inserted: Inserted::Existing(t), claim: None, .. })
                if t.id() == first.id && t.state == TaskState::Assigned
        ));
        assert_eq!(plan.inserts.len(), 1, "stored once");
        assert_eq!(plan.slot_changes, vec![(i, 1)], "claimed once");
    }

    fn keyed(key: &str, limit: u32, strategy: ConcurrencyStrategy) -> NewTask {
        NewTask {
            concurrency: Some(
                switchboard_domain::policy::Concurrency::new(key.into(), limit, strategy).expect("valid"),
            ),
            ..new_task(None)
        }
    }

    #[test]
    fn a_concurrency_key_at_its_limit_refuses_the_claim_counting_the_batchs_own_claims() {
        let (a, b, c) = (
            Task::queued(keyed("deploy", 2, ConcurrencyStrategy::KeepAll)),
            Task::queued(keyed("deploy", 2, ConcurrencyStrategy::KeepAll)),
            Task::queued(keyed("deploy", 2, ConcurrencyStrategy::KeepAll)),
        );
        let i = InstanceId::new();
        let mut l = loaded(&[&a, &b, &c], &[(i, 0, 10)]);
        let key = ("acme".to_owned(), "deploy".to_owned());
        l.held_by_key.insert(key.clone(), 1);
        let writes = vec![claim(a.id(), i), claim(b.id(), i)];
        let p = plan(&writes, l.clone());
        assert!(matches!(p.outcomes[0], Ok(Written::Claim(Claim::Claimed(_)))));
        assert!(
            matches!(&p.outcomes[1], Ok(Written::Claim(Claim::Limited { key, running: 2, limit: 2 })) if key == "deploy"),
            "{:?}",
            p.outcomes[1]
        );
        // A run of the key ending in the same batch frees its place for a later claim.
        let mut running = b.clone();
        running.state = TaskState::Running;
        running.attempt = Attempt(1);
        running.instance_id = Some(i);
        l.tasks.insert(running.id(), running.clone());
        l.held_by_key.insert(key, 2);
        l.instances.insert(i, Slots::open(2, 10));
        let writes = vec![
            TaskWrite::Transition(Box::new(
                Transition::new(running.id(), Some(Attempt(1)), TaskEvent::Succeed, Utc::now()).held_by(i),
            )),
            claim(c.id(), i),
        ];
        let p = plan(&writes, l);
        assert!(
            matches!(p.outcomes[1], Ok(Written::Claim(Claim::Claimed(_)))),
            "{:?}",
            p.outcomes
        );
    }

    #[test]
    fn a_cancel_older_submission_cancels_the_keys_waiting_tasks_and_logs_why() {
        let old = Task::queued(keyed("deploy", 1, ConcurrencyStrategy::KeepAll));
        let mut l = loaded(&[&old], &[]);
        l.waiting_by_key
            .insert(("acme".into(), "deploy".into()), vec![old.id()]);
        let submit = |t: NewTask| {
            TaskWrite::Submit(Box::new(Submission {
                task: t,
                claim: None,
                log: vec![],
                log_if_claimed: vec![],
                audit: None,
            }))
        };
        let (second, third) = (
            keyed("deploy", 1, ConcurrencyStrategy::CancelOlder),
            keyed("deploy", 1, ConcurrencyStrategy::CancelOlder),
        );
        let p = plan(&[submit(second.clone()), submit(third)], l);
        let superseded: Vec<Vec<TaskId>> = p
            .outcomes
            .iter()
            .map(|o| match o {
                Ok(Written::Submitted { superseded, .. }) => superseded.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(superseded, vec![vec![old.id()], vec![second.id]]);
        assert_eq!(p.updates.len(), 1);
        assert_eq!(p.updates[0].state, TaskState::Cancelled);
        let second_stored = p.inserts.iter().find(|t| t.id() == second.id).expect("inserted");
        assert_eq!(second_stored.state, TaskState::Cancelled, "cancelled by the third");
        assert!(p.log.iter().all(|e| e.summary.contains("superseded by task")));
    }

    #[test]
    fn timestamps_are_cut_to_the_backends_precision() {
        let at = DateTime::parse_from_rfc3339("2026-12-01T10:00:00.123456789Z")
            .expect("time")
            .with_timezone(&Utc);
        assert_eq!(Precision::Micros.truncate(at).timestamp_subsec_nanos(), 123_456_000);
        assert_eq!(Precision::Millis.truncate(at).timestamp_subsec_nanos(), 123_000_000);
    }
}
