//! The tasks this instance is running now.
//!
//! Heartbeats must list every running task with its attempt (the manager keeps their
//! execution timeouts alive from that list and re-queues what is missing), a
//! `cancel_task` must reach the right task, a drain must wait for the running ones to
//! finish, and capacity must never be exceeded. The registry holds all of that in one
//! place. It does not know about the session: it publishes its list on a `watch`
//! channel, and the agent forwards each change to `Session::set_running`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::Value;
use switchboard_domain::{Attempt, Capacity, TaskId, TaskType};
use switchboard_protocol::socket::RunningTask;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cancel::{self, Canceller};
use crate::tasks::{Runner, TaskIo, TaskOutcome};

/// Why a task was not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The instance is draining: it finishes what it runs and takes nothing new.
    Draining,
    /// As many tasks run as the capacity allows.
    Full,
    /// This task already runs here (any attempt).
    AlreadyRunning,
}

#[derive(Debug)]
pub struct Registry {
    capacity: Capacity,
    /// A std mutex, not tokio's: it is held only for a map update, never across an
    /// `.await`, and task guards take it from `Drop`, where nothing can be awaited.
    state: Mutex<State>,
    /// The running list, republished (while `state` is held, so updates cannot arrive
    /// out of order) after every change.
    changes: watch::Sender<Vec<RunningTask>>,
}

#[derive(Debug)]
struct State {
    accepting: bool,
    running: BTreeMap<TaskId, Slot>,
}

#[derive(Debug)]
struct Slot {
    attempt: Attempt,
    canceller: Canceller,
}

impl Registry {
    pub fn new(capacity: Capacity) -> Arc<Registry> {
        Arc::new(Registry {
            capacity,
            state: Mutex::new(State {
                accepting: true,
                running: BTreeMap::new(),
            }),
            changes: watch::channel(Vec::new()).0,
        })
    }

    /// Follows the running list; the current value is the list now.
    pub fn subscribe(&self) -> watch::Receiver<Vec<RunningTask>> {
        self.changes.subscribe()
    }

    pub fn running(&self) -> Vec<RunningTask> {
        self.changes.borrow().clone()
    }

    /// Starts `task` on `runner` with `io` (where its output goes, its secrets), and
    /// tracks it until it ends. The outcome comes back on the handle, for the caller to report.
    pub fn launch(
        self: &Arc<Self>,
        runner: &Runner,
        task: RunningTask,
        task_type: TaskType,
        payload: Value,
        timeout: Duration,
        io: TaskIo,
    ) -> Result<JoinHandle<TaskOutcome>, Refused> {
        let (canceller, token) = cancel::pair();
        {
            let mut state = self.lock();
            if !state.accepting {
                return Err(Refused::Draining);
            }
            if state.running.contains_key(&task.task_id) {
                return Err(Refused::AlreadyRunning);
            }
            if state.running.len() >= self.capacity.get() as usize {
                return Err(Refused::Full);
            }
            state.running.insert(
                task.task_id,
                Slot {
                    attempt: task.attempt,
                    canceller,
                },
            );
            self.publish(&state);
        }
        // The guard lives inside the spawned future, so the task leaves the registry
        // however it ends: completion, panic, or the runtime shutting down.
        let done = Done {
            registry: Arc::clone(self),
            task,
        };
        let runner = runner.clone();
        Ok(tokio::spawn(async move {
            let _done = done;
            runner.run_with(&task_type, payload, timeout, token, io).await
        }))
    }

    /// Cancels `task_id` if it runs `attempt`; a cancel for another attempt is stale and
    /// must not stop the current one. Says whether something was cancelled.
    pub fn cancel(&self, task_id: TaskId, attempt: Attempt) -> bool {
        let state = self.lock();
        match state.running.get(&task_id) {
            Some(slot) if slot.attempt == attempt => {
                slot.canceller.cancel();
                true
            }
            _ => false,
        }
    }

    /// Cancels everything running.
    pub fn cancel_all(&self) {
        for slot in self.lock().running.values() {
            slot.canceller.cancel();
        }
    }

    /// Takes no new task from now on.
    pub fn stop_accepting(&self) {
        self.lock().accepting = false;
    }

    /// Resolves when nothing runs.
    pub async fn idle(&self) {
        let mut changes = self.changes.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = changes.wait_for(Vec::is_empty).await;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a consistent map (every update is one
        // insert or remove), so a poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, state: &State) {
        let list = state
            .running
            .iter()
            .map(|(task_id, slot)| RunningTask {
                task_id: *task_id,
                attempt: slot.attempt,
            })
            .collect();
        self.changes.send_replace(list);
    }
}

/// Removes a task from the registry when its run ends.
struct Done {
    registry: Arc<Registry>,
    task: RunningTask,
}

impl Drop for Done {
    fn drop(&mut self) {
        let mut state = self.registry.lock();
        if state
            .running
            .get(&self.task.task_id)
            .is_some_and(|s| s.attempt == self.task.attempt)
        {
            state.running.remove(&self.task.task_id);
            self.registry.publish(&state);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use switchboard_domain::Ident;

    use super::*;
    use crate::tasks::BuiltIn;

    fn sleep_type() -> TaskType {
        TaskType(Ident::parse("sleep").unwrap())
    }

    fn task(attempt: u32) -> RunningTask {
        RunningTask {
            task_id: TaskId::new(),
            attempt: Attempt(attempt),
        }
    }

    fn long_sleep(registry: &Arc<Registry>, t: RunningTask) -> Result<JoinHandle<TaskOutcome>, Refused> {
        let runner = Runner::new(&[BuiltIn::Sleep]);
        registry.launch(
            &runner,
            t,
            sleep_type(),
            json!({"ms": 60_000}),
            Duration::from_secs(120),
            TaskIo::default(),
        )
    }

    #[tokio::test]
    async fn a_launched_task_is_listed_until_it_ends() {
        let registry = Registry::new(Capacity::default());
        let mut changes = registry.subscribe();
        let t = task(1);
        let runner = Runner::new(&[BuiltIn::Sleep]);
        let handle = registry
            .launch(
                &runner,
                t,
                sleep_type(),
                json!({"ms": 1}),
                Duration::from_secs(5),
                TaskIo::default(),
            )
            .unwrap();
        assert!(changes.has_changed().unwrap());
        assert_eq!(changes.borrow_and_update().clone(), vec![t]);
        assert!(handle.await.unwrap().succeeded);
        registry.idle().await;
        assert!(registry.running().is_empty());
    }

    #[tokio::test]
    async fn cancel_stops_only_the_named_attempt() {
        let registry = Registry::new(Capacity::default());
        let t = task(2);
        let handle = long_sleep(&registry, t).unwrap();
        assert!(!registry.cancel(t.task_id, Attempt(1)), "a stale attempt is ignored");
        assert!(
            !registry.cancel(TaskId::new(), Attempt(2)),
            "an unknown task is ignored"
        );
        assert_eq!(registry.running(), vec![t]);
        assert!(registry.cancel(t.task_id, Attempt(2)));
        assert_eq!(handle.await.unwrap().error_code(), Some("cancelled"));
        assert!(registry.running().is_empty());
    }

    #[tokio::test]
    async fn capacity_is_never_exceeded() {
        let registry = Registry::new(Capacity::new(2).unwrap());
        let first = task(1);
        long_sleep(&registry, first).unwrap();
        long_sleep(&registry, task(1)).unwrap();
        assert_eq!(long_sleep(&registry, task(1)).unwrap_err(), Refused::Full);
        assert_eq!(long_sleep(&registry, first).unwrap_err(), Refused::AlreadyRunning);
        registry.cancel_all();
        registry.idle().await;
    }

    #[tokio::test]
    async fn a_draining_registry_takes_nothing_new_and_finishes_what_runs() {
        let registry = Registry::new(Capacity::default());
        let t = task(1);
        let handle = long_sleep(&registry, t).unwrap();
        registry.stop_accepting();
        assert_eq!(long_sleep(&registry, task(1)).unwrap_err(), Refused::Draining);
        let idle = tokio::spawn({
            let registry = Arc::clone(&registry);
            async move { registry.idle().await }
        });
        registry.cancel(t.task_id, t.attempt);
        handle.await.unwrap();
        idle.await.unwrap();
    }
}
