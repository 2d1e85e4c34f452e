//! The dispatcher: turns queued tasks into assignments, and keeps the lifecycle moving.
//!
//! Everything here runs with a [`Placer`] ([`placer`]): the store, the kept snapshot,
//! the in-memory coordination below, the metrics, the timers and a [`Reach`] to the
//! delegates' sockets; never with the whole server state.
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
//!   with the last explanation), execution timeout (time out), liveness (the tasks of an
//!   instance whose heartbeat is too old, as if its socket closed).
//! * [`lifecycle::instance_lost`] releases or re-queues what a lost instance held.

pub mod fleet;
pub mod lifecycle;
pub mod place;
pub mod placer;
pub mod shares;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use switchboard_domain::{Attempt, Capability, InstanceId, TaskId};
use tokio::sync::{Notify, broadcast};

pub use lifecycle::retried;
pub use place::{Placement, place};
pub use placer::{Placer, Reach, Timers};

/// A capability question sent to an instance on behalf of a task, awaiting its answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    pub task: TaskId,
    pub attempt: Attempt,
    pub instance: InstanceId,
    pub capabilities: Vec<Capability>,
}

/// The dispatcher's in-memory coordination. Everything durable is in the store; this only
/// wakes loops, matches validation answers to their questions, and announces task changes
/// to long-polling clients.
#[derive(Debug)]
pub struct Dispatcher {
    wake: Notify,
    seeds: AtomicU64,
    /// Validation questions awaiting an answer, by request id. A std mutex: inserts,
    /// removals and a scan of the few outstanding questions, never held across an await.
    /// Each entry leaves when its answer arrives or its timeout fires
    /// ([`place::ask`] spawns that timer), whichever is first.
    validations: Mutex<HashMap<String, Question>>,
    /// Tasks a placement is running for right now in this process, so the queue sweep
    /// and a submission never place the same task twice at once (the store would keep it
    /// correct anyway; this saves the duplicate work and validation questions).
    placing: Mutex<HashSet<TaskId>>,
    changes: broadcast::Sender<TaskId>,
    /// Tasks whose log grew, here or on another replica, for the readers following it.
    logs: broadcast::Sender<TaskId>,
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
            logs: broadcast::channel(1024).0,
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

    /// Announces that a task changed (for long-polling clients), here or on another
    /// replica. Its last explanation is forgotten too: whatever the change (placed, ended,
    /// cancelled, expired, re-queued), the next decision about it, if any, is news worth
    /// a log entry; and a task that left the queue leaves no entry behind in the map.
    pub fn changed(&self, task: TaskId) {
        self.forget_explanation(task);
        // A question asked for it is moot now; its answer is still stored when it comes.
        lock(&self.validations).retain(|_, q| q.task != task);
        let _ = self.changes.send(task);
    }

    /// Tells this replica's watchers (the event stream, long polls) that `task` is new,
    /// and nothing else: unlike [`Dispatcher::changed`], a question asked for it and its
    /// last explanation stay, since its placement has only begun.
    pub fn announce_new(&self, task: TaskId) {
        let _ = self.changes.send(task);
    }

    /// Announces, to this replica's readers following it, that `task`'s log grew.
    pub fn log_grew(&self, task: TaskId) {
        let _ = self.logs.send(task);
    }

    /// Listens for grown task logs.
    pub fn subscribe_logs(&self) -> broadcast::Receiver<TaskId> {
        self.logs.subscribe()
    }

    /// Listens for task changes.
    pub fn subscribe(&self) -> broadcast::Receiver<TaskId> {
        self.changes.subscribe()
    }

    /// How many listen for task changes now (long polls, mostly).
    pub fn listeners(&self) -> usize {
        self.changes.receiver_count()
    }

    /// The question `request_id` answers, if it is still outstanding (it is then no
    /// longer: an answer or a timeout settles it once).
    pub fn settle_question(&self, request_id: &str) -> Option<Question> {
        lock(&self.validations).remove(request_id)
    }

    pub(crate) fn ask(&self, request_id: String, question: Question) {
        lock(&self.validations).insert(request_id, question);
    }

    /// The instance `task` waits on for an answer, if a question about it is outstanding.
    pub(crate) fn asking(&self, task: TaskId) -> Option<InstanceId> {
        lock(&self.validations)
            .values()
            .find(|q| q.task == task)
            .map(|q| q.instance)
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

    /// Marks `task` as being placed, for as long as the returned guard lives; `None` if
    /// it already is. A guard, not a pair of calls: a placement whose future is dropped
    /// (a submission's request timed out, its client hung up) must not leave the task
    /// marked, or every later sweep here would skip it until it expired.
    pub fn begin_placing(&self, task: TaskId) -> Option<Placing<'_>> {
        // The lock is released before a guard exists (its drop takes the same lock), and
        // a guard is made only when the task was free: `then_some` would build one either
        // way and, dropping the unused one, unmark the placement under way.
        let free = lock(&self.placing).insert(task);
        free.then(|| Placing { dispatcher: self, task })
    }
}

/// A placement under way (see [`Dispatcher::begin_placing`]); unmarks its task when dropped.
#[derive(Debug)]
pub struct Placing<'d> {
    dispatcher: &'d Dispatcher,
    task: TaskId,
}

impl Drop for Placing<'_> {
    fn drop(&mut self) {
        lock(&self.dispatcher.placing).remove(&self.task);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each critical section is one map operation, so a poisoned lock holds no half-done
    // update.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_placement_dropped_midway_leaves_its_task_free_for_the_next() {
        let dispatcher = Dispatcher::default();
        let task = TaskId::new();
        let placing = dispatcher.begin_placing(task).expect("free");
        assert!(dispatcher.begin_placing(task).is_none(), "placed twice at once");
        // A submission's future dropped at an await (its request timed out) drops this.
        drop(placing);
        assert!(
            dispatcher.begin_placing(task).is_some(),
            "the task stays marked for ever"
        );
    }

    #[test]
    fn a_change_of_a_task_forgets_its_last_explanation() {
        let dispatcher = Dispatcher::default();
        let task = TaskId::new();
        assert!(dispatcher.explanation_changed(task, "0/1 delegates eligible"));
        assert!(!dispatcher.explanation_changed(task, "0/1 delegates eligible"));
        // Cancelled, expired or placed, here or by another replica.
        dispatcher.changed(task);
        assert!(lock(&dispatcher.explained).is_empty(), "an ended task stays in the map");
        assert!(dispatcher.explanation_changed(task, "0/1 delegates eligible"));
    }
}
