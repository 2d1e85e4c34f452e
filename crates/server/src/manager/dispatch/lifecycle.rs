//! What moves tasks along besides placement: a lost instance, the timers, cancellation,
//! and the loops that run placement and the timers in the background.

use std::time::Duration;

use chrono::Utc;
use switchboard_domain::policy::Ending;
use switchboard_domain::{
    Attempt, Failure, FailureReason, InstanceId, SelectionKind, Task, TaskEvent, TaskId, TaskState,
};
use switchboard_store::{DueQuery, StoreError, StoreResult, Transition};
use tokio::task::JoinHandle;

use tokio_util::sync::CancellationToken;

use super::place::{Placement, place_task, record};
use super::placer::Placer;
use crate::manager::workers::Workers;

/// The most tasks one sweep of the queue or of the timers handles; the rest wait for the
/// next sweep, a few hundred milliseconds later.
const BATCH: u32 = 200;

/// The shortest pause between two sweeps of the queue. Every result wakes the sweep (a
/// slot is free); under load the wake-ups that arrive meanwhile are served by one sweep
/// instead of one query of the queue each.
const SWEEP_GAP: Duration = Duration::from_millis(10);

/// How an instance was lost, for the records of the tasks it held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Its socket closed (not at this manager's shutdown).
    Disconnected,
    /// Its last heartbeat is older than the heartbeat timeout, socket open or not.
    Stale,
}

impl Loss {
    fn what(self) -> &'static str {
        match self {
            Loss::Disconnected => "disconnected",
            Loss::Stale => "stopped sending heartbeats",
        }
    }
}

/// An instance is gone (its socket closed): its assigned tasks go back to the queue at
/// once; its running tasks are re-queued while attempts remain, else fail
/// `delegate_lost`.
#[tracing::instrument(name = "instance_lost", skip_all, fields(instance.id = %instance))]
pub async fn instance_lost(placer: &Placer, instance: InstanceId) {
    let held = match placer.store().tasks_held_by(instance).await {
        Ok(held) => held,
        Err(e) => {
            // The reaper's liveness timer and the acknowledge timeout catch these later.
            tracing::warn!(instance.id = %instance, error = %e, "cannot list the tasks of a lost instance");
            return;
        }
    };
    for task in &held {
        lose(placer, task, Loss::Disconnected).await;
    }
    placer.dispatcher().wake();
}

/// Gives back to the queue at once the tasks offered to `instance` that it has not
/// acquired (the instance `why`: "is draining"), each fenced by its attempt: one acquired
/// meanwhile stays with it. Running tasks are left alone.
#[tracing::instrument(name = "give_back_offers", skip_all, fields(instance.id = %instance))]
pub async fn give_back_offers(placer: &Placer, instance: InstanceId, why: &str) {
    let held = match placer.store().tasks_held_by(instance).await {
        Ok(held) => held,
        Err(e) => {
            tracing::warn!(instance.id = %instance, error = %e, "cannot list the offers of an instance to give them back");
            return;
        }
    };
    for task in held.iter().filter(|t| t.state == TaskState::Assigned) {
        let why = format!("its instance {why}; given back before it acquired the task");
        apply(placer, task, TaskEvent::Release, None, &why).await;
    }
    placer.dispatcher().wake();
}

/// Takes `task` from the instance that held it, lost as `loss` says (docs/rules.md, "Task lifecycle": an
/// instance that disappears, socket closed or heartbeat too old, releases its assigned
/// tasks at once; its running ones are re-queued while attempts remain, else fail
/// `delegate_lost`). Fenced by the task's attempt, so a task that moved on meanwhile is
/// left alone.
async fn lose(placer: &Placer, task: &Task, loss: Loss) {
    let what = loss.what();
    let instance = task.instance_id.map(|i| i.to_string()).unwrap_or_default();
    let (event, failure, why) = match task.state {
        TaskState::Assigned => (
            TaskEvent::Release,
            None,
            format!("its instance {what} before acquiring it"),
        ),
        // Whether it runs again is its retry policy's to say (by default a lost run is
        // retried while attempts remain): the store applies it with the failure.
        _ => (
            TaskEvent::Fail,
            Some(Failure::new(
                FailureReason::DelegateLost,
                format!("instance {instance} {what} while running it"),
            )),
            format!("its instance {what} while running it"),
        ),
    };
    apply(placer, task, event, failure, &why).await;
    // A stale instance may still have its socket, and still be running the task: it is
    // told to stop, as a run past its deadline is (a closed socket hears nothing).
    if loss == Loss::Stale
        && task.state == TaskState::Running
        && let Some(instance) = task.instance_id
    {
        placer.reach().cancel(instance, task.id(), task.attempt);
    }
}

/// Applies one fenced transition for the task's current attempt and records it.
async fn apply(placer: &Placer, task: &Task, event: TaskEvent, failure: Option<Failure>, why: &str) {
    let mut t = Transition::new(task.id(), Some(task.attempt), event, Utc::now());
    t.failure = failure;
    match placer.store().transition_task(&t).await {
        Ok(after) if task.state == TaskState::Running && after.state == TaskState::Queued => {
            // A run its retry policy retries.
            let ending = switchboard_domain::policy::ending_of(event, t.failure.as_ref());
            let ending = ending.unwrap_or(switchboard_domain::policy::Ending::DelegateLost);
            retried(placer, &after, task.attempt, ending, why).await;
        }
        Ok(after) => {
            placer.metrics().task_finished(&after);
            let kind = if after.state == TaskState::Queued {
                SelectionKind::Requeued
            } else {
                SelectionKind::Ended
            };
            let summary = format!("{}: {why}", after.state);
            let detail = serde_json::json!({"event": event, "attempt": task.attempt});
            record(placer, task.id(), task.attempt, kind, &summary, Ok(detail)).await;
            placer.task_changed(task.id());
            tracing::info!(task.id = %task.id(), attempt = %task.attempt, placer = %after.state, why, "task moved");
        }
        // The task moved on meanwhile (a result arrived, it was cancelled): nothing to do.
        Err(StoreError::Conflict(_)) => {}
        Err(e) => {
            tracing::warn!(task.id = %task.id(), error = %e, "cannot apply a lifecycle change");
        }
    }
}

/// Applies the timers once: expires queued tasks past their assign timeout (with the last
/// explanation), releases assignments not acknowledged in time, times out runs whose
/// deadline passed, and takes their tasks from instances whose heartbeat is too old.
#[tracing::instrument(name = "timers", skip_all)]
pub async fn reap(placer: &Placer) -> StoreResult<()> {
    let now = Utc::now();
    let timers = placer.timers();
    let duration = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    // The stored heartbeat is up to one flush interval behind the one the instance's
    // manager holds in memory (`manager::heartbeats`): an instance counts as lost only
    // once even that margin has passed, so a replica slow to flush never costs a delegate
    // its tasks. Placement, which only withholds new tasks, uses the timeout alone.
    // A cut-off no earlier than 1970: a timeout of centuries means "never", and every
    // database takes that date (PostgreSQL refuses those before 4713 BC).
    let before = |d: Duration| {
        now.checked_sub_signed(duration(d))
            .filter(|t| *t > chrono::DateTime::UNIX_EPOCH)
            .unwrap_or(chrono::DateTime::UNIX_EPOCH)
    };
    let heartbeat_before = before(timers.heartbeat_timeout.saturating_add(timers.heartbeat_flush_interval));
    let query = DueQuery {
        now,
        unacknowledged_before: before(timers.acknowledge_timeout),
        heartbeat_before,
        limit: BATCH,
    };
    let due = placer.store().due_tasks(&query).await?;
    for task in &due.expired {
        let last = last_explanation(placer, task.id()).await;
        apply(
            placer,
            task,
            TaskEvent::Expire,
            None,
            &format!("not assigned within its assign timeout; last: {last}"),
        )
        .await;
    }
    for task in &due.unacknowledged {
        apply(
            placer,
            task,
            TaskEvent::Release,
            None,
            "not acquired within the acknowledge timeout",
        )
        .await;
    }
    for task in &due.overrun {
        let instance = task.instance_id;
        let failure = Failure::new(FailureReason::TaskError, "ran past its execution timeout");
        apply(
            placer,
            task,
            TaskEvent::TimeOut,
            Some(failure),
            "no heartbeat listed it within its execution timeout",
        )
        .await;
        if let Some(instance) = instance {
            placer.reach().cancel(instance, task.id(), task.attempt);
        }
    }
    for task in &due.lost {
        // This manager's own view of the instance's heartbeat may be newer than the store's.
        let beat = task.instance_id.and_then(|i| placer.reach().heard_at(i));
        if beat.is_some_and(|at| at >= heartbeat_before) {
            continue;
        }
        lose(placer, task, Loss::Stale).await;
    }
    if !due.unacknowledged.is_empty() || !due.overrun.is_empty() || !due.lost.is_empty() {
        placer.dispatcher().wake();
    }
    Ok(())
}

/// A run of `task` (as `attempt`) ended as `ending` and its retry policy put the task back
/// in the queue (the store applied the policy: `task` is as it stored it): logs it, counts
/// it, and wakes the queue when the next attempt is due.
pub async fn retried(placer: &Placer, task: &Task, attempt: Attempt, ending: Ending, why: &str) {
    placer.metrics().task_retried(ending);
    let due = task.retry_at.unwrap_or_else(Utc::now);
    let ending_name = serde_json::to_value(ending).ok();
    let ending_name = ending_name.as_ref().and_then(|v| v.as_str()).unwrap_or("ended");
    let mut summary = format!(
        "requeued: attempt {attempt} {ending_name}; retrying as attempt {} at {}",
        attempt.next(),
        due.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    if !why.is_empty() {
        summary.push_str(&format!(" ({why})"));
    }
    let detail = serde_json::json!({"ending": ending, "attempt": attempt, "retry_at": due});
    record(
        placer,
        task.id(),
        attempt,
        SelectionKind::Requeued,
        &summary,
        Ok(detail),
    )
    .await;
    placer.task_changed(task.id());
    tracing::info!(task.id = %task.id(), %attempt, ending = ending_name, retry_at = %due, "task retried");
    let wait = (due - Utc::now()).to_std().unwrap_or_default();
    if wait.is_zero() {
        placer.dispatcher().wake();
    } else {
        // Wakes the queue when the retry is due; the full sweep every `assign_interval`
        // finds it anyway should this manager stop meanwhile.
        let placer = placer.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            placer.dispatcher().wake();
        });
    }
}

async fn last_explanation(placer: &Placer, task: TaskId) -> String {
    match placer.store().selection_log(task).await {
        Ok(log) => log
            .iter()
            .rev()
            .find(|e| e.kind == SelectionKind::Decision)
            .map(|e| e.summary.clone())
            .unwrap_or_else(|| "never evaluated".into()),
        Err(_) => "unknown".into(),
    }
}

/// Cancels a task (an operator or pipeline action, so not fenced), telling its instance
/// to stop if one holds it.
#[tracing::instrument(name = "cancel", skip_all, fields(task.id = %id))]
pub async fn cancel(placer: &Placer, id: TaskId) -> StoreResult<Task> {
    let before = placer.store().get_task(id).await?;
    let after = placer
        .store()
        .transition_task(&Transition::new(id, None, TaskEvent::Cancel, Utc::now()))
        .await?;
    placer.metrics().task_finished(&after);
    if let Some(instance) = before.instance_id {
        placer.reach().cancel(instance, id, before.attempt);
    }
    record(
        placer,
        id,
        before.attempt,
        SelectionKind::Ended,
        "cancelled",
        Ok(serde_json::Value::Null),
    )
    .await;
    placer.task_changed(id);
    placer.dispatcher().wake();
    Ok(after)
}

/// The dispatcher's background work: placement of the queue and the timers.
#[derive(Debug)]
pub struct Loops {
    workers: Workers,
}

impl Loops {
    pub fn start(placer: &Placer) -> Self {
        let workers = Workers::default();
        workers.spawn(|stop| place_queue(placer.clone(), stop));
        workers.spawn(|stop| reap_forever(placer.clone(), stop));
        Self { workers }
    }

    pub async fn stop(self) {
        self.workers.stop().await;
    }
}

/// How many placements a sweep runs at once (each a few store calls; none waits on a
/// delegate, since validation questions are answered asynchronously).
const SWEEP_PARALLEL: usize = 8;

/// A sweep woken by a change stops after this many placements in a row left their task
/// waiting: a freed slot is taken by the first tasks that fit, and deciding again for
/// every task behind them only repeats the same "no". The sweep every
/// `assign_interval` goes through the whole batch, so a task stuck at the head of the
/// queue (waiting for a delegate that does not exist yet) never hides the ones behind it
/// for longer than that.
const WAITING_IN_A_ROW: usize = 8;

async fn place_queue(placer: Placer, stop: CancellationToken) {
    let every = placer.timers().assign_interval;
    let mut next_full = tokio::time::Instant::now() + every;
    let mut last: Option<JoinHandle<()>> = None;
    loop {
        let mut woken = tokio::select! {
            () = placer.dispatcher().woken() => true,
            () = tokio::time::sleep_until(next_full) => false,
            () = stop.cancelled() => return,
        };
        if !woken {
            next_full = tokio::time::Instant::now() + every;
        }
        // A wake-up during a sweep is served by the next sweep, once that one ends (or
        // at the next period, should its placements be slow).
        if woken && let Some(running) = last.as_mut().filter(|s| !s.is_finished()) {
            tokio::select! {
                _ = running => {}
                () = tokio::time::sleep_until(next_full) => {
                    next_full = tokio::time::Instant::now() + every;
                    woken = false;
                }
                () = stop.cancelled() => return,
            }
        }
        // The head of every account's queue, fairly ordered (`shares`).
        let queued = match placer
            .shares()
            .sweep_list(placer.store().as_ref(), BATCH as usize)
            .await
        {
            Ok(q) => q,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the queue; trying again next interval");
                continue;
            }
        };
        // A few placements at a time, in queue order, in a task of its own so that the
        // loop hears the next wake-up and the next period meanwhile.
        let stop_early = woken;
        let state_ = placer.clone();
        last = Some(tokio::spawn(async move { sweep(&state_, queued, stop_early).await }));
        tokio::select! {
            () = tokio::time::sleep(SWEEP_GAP) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Places `queued` in order, [`SWEEP_PARALLEL`] at a time; with `stop_early`, stops
/// starting new placements after [`WAITING_IN_A_ROW`] waiting ones in a row.
#[tracing::instrument(name = "sweep", skip_all, fields(queued = queued.len(), woken = stop_early))]
async fn sweep(placer: &Placer, queued: Vec<Task>, stop_early: bool) {
    let mut running = tokio::task::JoinSet::new();
    let mut waiting_in_a_row = 0;
    let mut queued = queued.into_iter();
    loop {
        while running.len() < SWEEP_PARALLEL && !(stop_early && waiting_in_a_row >= WAITING_IN_A_ROW) {
            let Some(task) = queued.next() else { break };
            let placer = placer.clone();
            running.spawn(async move {
                let id = task.id();
                let outcome = place_task(&placer, task).await;
                if let Err(e) = &outcome {
                    tracing::warn!(task.id = %id, error = %e, "placement failed; the next sweep retries");
                }
                outcome
            });
        }
        let Some(done) = running.join_next().await else { return };
        match done {
            Ok(Ok(Placement::Waiting { .. })) => waiting_in_a_row += 1,
            Ok(Ok(_)) => waiting_in_a_row = 0,
            Ok(Err(_)) | Err(_) => {}
        }
    }
}

async fn reap_forever(placer: Placer, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(Duration::from_millis(250).min(placer.timers().assign_interval));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                // One replica at a time: the others' timers would only lose the races.
                if !placer.leads().await {
                    continue;
                }
                if let Err(e) = reap(&placer).await {
                    tracing::warn!(error = %e, "the timer sweep failed; trying again next tick");
                }
            }
            () = stop.cancelled() => return,
        }
    }
}
