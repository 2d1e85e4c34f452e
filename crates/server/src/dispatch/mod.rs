//! The dispatcher: turns queued tasks into assignments, and keeps the lifecycle moving.
//!
//! * [`place`] runs the engine for one queued task against a snapshot of the registry
//!   ([`fleet`]: kept between placements, rebuilt when it may be wrong), asks the chosen instance to validate capabilities it has no answer for,
//!   claims the task in the store (the store is the only arbiter: a lost race just means
//!   another round), pushes `task_available` over the instance's socket, and records every
//!   decision in the selection log. It fails a task at once when no registered delegate
//!   could ever take it (unless the submitter asked to wait) or when every eligible
//!   instance answered that it cannot reach a capability.
//! * The background loop re-examines the queue whenever something changes (a delegate
//!   connects, a slot frees, a result or a validation answer arrives: [`Dispatcher::wake`])
//!   and on an interval anyway, so a missed wake-up never strands a task.
//! * The reaper applies the timers: acknowledge timeout (release), assign timeout (expire,
//!   with the last explanation), execution timeout (time out).
//! * [`lifecycle::instance_lost`] releases or re-queues what a lost instance held.

pub mod fleet;
pub mod lifecycle;
pub mod place;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use switchboard_domain::TaskId;
use switchboard_protocol::socket::CheckResult;
use tokio::sync::{Notify, broadcast, oneshot};

pub use place::{Placement, place};

/// The dispatcher's in-memory coordination. Everything durable is in the store; this only
/// wakes loops, matches validation answers to their questions, and announces task changes
/// to long-polling clients.
#[derive(Debug)]
pub struct Dispatcher {
    wake: Notify,
    seeds: AtomicU64,
    /// Validation questions awaiting an answer, by request id. A std mutex: inserts and
    /// removals only, never held across an await.
    validations: Mutex<HashMap<String, oneshot::Sender<Vec<CheckResult>>>>,
    /// Tasks a placement is running for right now in this process, so the queue sweep
    /// and a submission never place the same task twice at once (the store would keep it
    /// correct anyway; this saves the duplicate work and validation questions).
    placing: Mutex<HashSet<TaskId>>,
    changes: broadcast::Sender<TaskId>,
    /// The last decision summary recorded per waiting task: a task re-examined every
    /// sweep gets a new selection-log entry only when the explanation changes.
    explained: Mutex<HashMap<TaskId, String>>,
}

impl Default for Dispatcher {
    fn default() -> Self {
        Self {
            wake: Notify::new(),
            seeds: AtomicU64::new(0x5eed),
            validations: Mutex::default(),
            placing: Mutex::default(),
            changes: broadcast::channel(1024).0,
            explained: Mutex::default(),
        }
    }
}

impl Dispatcher {
    /// Something changed that may let a queued task be placed.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }

    /// A fresh seed for the engine's tie-break.
    pub(crate) fn seed(&self) -> u64 {
        self.seeds.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
    }

    /// Announces that a task changed (for long-polling clients).
    pub fn changed(&self, task: TaskId) {
        let _ = self.changes.send(task);
    }

    /// Listens for task changes.
    pub fn subscribe(&self) -> broadcast::Receiver<TaskId> {
        self.changes.subscribe()
    }

    /// How many listen for task changes now (long polls, mostly).
    pub fn listeners(&self) -> usize {
        self.changes.receiver_count()
    }

    /// Delivers a validation answer to the placement waiting for it. Returns whether one
    /// was waiting.
    pub fn validation_answered(&self, request_id: &str, results: Vec<CheckResult>) -> bool {
        let waiting = lock(&self.validations).remove(request_id);
        waiting.is_some_and(|tx| tx.send(results).is_ok())
    }

    pub(crate) fn expect_validation(&self, request_id: String) -> oneshot::Receiver<Vec<CheckResult>> {
        let (tx, rx) = oneshot::channel();
        lock(&self.validations).insert(request_id, tx);
        rx
    }

    pub(crate) fn forget_validation(&self, request_id: &str) {
        lock(&self.validations).remove(request_id);
    }

    /// Whether `summary` differs from the last one recorded for `task` (and remembers it).
    pub(crate) fn explanation_changed(&self, task: TaskId, summary: &str) -> bool {
        let mut explained = lock(&self.explained);
        if explained.get(&task).is_some_and(|last| last == summary) {
            return false;
        }
        explained.insert(task, summary.to_owned());
        true
    }

    /// Forgets the explanation of a task that left the queue.
    pub(crate) fn forget_explanation(&self, task: TaskId) {
        lock(&self.explained).remove(&task);
    }

    /// Marks `task` as being placed; false if it already is.
    pub(crate) fn begin_placing(&self, task: TaskId) -> bool {
        lock(&self.placing).insert(task)
    }

    pub(crate) fn end_placing(&self, task: TaskId) {
        lock(&self.placing).remove(&task);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each critical section is one map operation, so a poisoned lock holds no half-done
    // update.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
