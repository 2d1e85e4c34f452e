//! Conformance cases for the task timers: the tasks an instance holds, the tasks a timer
//! is due for, and heartbeats keeping running tasks' deadlines alive.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use switchboard_domain::{Attempt, InstanceId, Task, TaskEvent, TaskId, TaskState};

use super::fixtures::{fleet, instance, now, queued, secret, task};
use crate::{Claim, DueQuery, Store, Transition};
use switchboard_domain::SecretKind;

fn claimed(c: Claim) -> Task {
    match c {
        Claim::Claimed(t) => *t,
        other => panic!("expected a claim, got {other:?}"),
    }
}

fn ids(tasks: &[Task]) -> Vec<TaskId> {
    tasks.iter().map(Task::id).collect()
}

/// Claims a task for `instance` at `at`, then has it acquired at `acquired` (if any).
async fn assign(
    store: &Arc<dyn Store>,
    t: &Task,
    instance: InstanceId,
    at: DateTime<Utc>,
    acquired: Option<DateTime<Utc>>,
) -> Task {
    let assigned = claimed(store.claim_task(t.id(), instance, at).await.expect("claim"));
    match acquired {
        None => assigned,
        Some(when) => store
            .transition_task(&Transition::new(
                t.id(),
                Some(assigned.attempt),
                TaskEvent::Acquire,
                when,
            ))
            .await
            .expect("acquired"),
    }
}

/// The timers' cut-offs at `now`, with no instance's heartbeat counted as too old.
fn timers(now: DateTime<Utc>, unacknowledged_before: DateTime<Utc>, limit: u32) -> DueQuery {
    DueQuery {
        now,
        unacknowledged_before,
        heartbeat_before: now - TimeDelta::days(1),
        limit,
    }
}

/// The run deadline of a task as stored.
async fn run_deadline(store: &Arc<dyn Store>, id: TaskId) -> Option<DateTime<Utc>> {
    store.get_task(id).await.expect("by id").run_deadline
}

pub async fn tasks_held_by_an_instance_are_its_assigned_and_running_ones(store: Arc<dyn Store>) {
    let (_, instances) = fleet(&store, "acme", "k8s", 2, 5).await;
    let (a, b) = (instances[0].id, instances[1].id);
    let at = now();
    let assigned = queued(&store, task("acme")).await;
    let running = queued(&store, task("acme")).await;
    let finished = queued(&store, task("acme")).await;
    let elsewhere = queued(&store, task("acme")).await;
    queued(&store, task("acme")).await;

    // Claimed in the opposite order of creation: held tasks come in assignment order.
    assign(&store, &running, a, at, Some(at)).await;
    assign(&store, &assigned, a, at + TimeDelta::seconds(1), None).await;
    let done = assign(&store, &finished, a, at, Some(at)).await;
    store
        .transition_task(&Transition::new(done.id(), Some(done.attempt), TaskEvent::Succeed, at))
        .await
        .expect("succeeded");
    assign(&store, &elsewhere, b, at, None).await;

    let held = store.tasks_held_by(a).await.expect("held");
    assert_eq!(ids(&held), [running.id(), assigned.id()]);
    assert_eq!(
        held.iter().map(|t| (t.state, t.instance_id)).collect::<Vec<_>>(),
        [(TaskState::Running, Some(a)), (TaskState::Assigned, Some(a))]
    );
    assert_eq!(held[0], store.get_task(running.id()).await.expect("by id"));
    assert_eq!(ids(&store.tasks_held_by(b).await.expect("held")), [elsewhere.id()]);
    assert!(store.tasks_held_by(InstanceId::new()).await.expect("held").is_empty());
}

pub async fn due_tasks_finds_expired_unacknowledged_and_overrun_tasks(store: Arc<dyn Store>) {
    let (_, instances) = fleet(&store, "acme", "k8s", 1, 10).await;
    let i = instances[0].id;
    let now = now();
    let ago = |minutes: i64| now - TimeDelta::minutes(minutes);
    let queued_since = |minutes: i64, assign_timeout: Duration| {
        let mut t = task("acme");
        t.created_at = ago(minutes);
        t.assign_timeout = assign_timeout;
        t
    };
    let five_minutes = Duration::from_secs(5 * 60);

    // Queued: expired 15 and 5 minutes ago, exactly due now (not yet past), not yet due.
    let expired_long_ago = queued(&store, queued_since(20, five_minutes)).await;
    let expired = queued(&store, queued_since(10, five_minutes)).await;
    let due_now = queued(&store, queued_since(5, five_minutes)).await;
    assert_eq!(due_now.assign_deadline(), now);
    queued(&store, queued_since(0, five_minutes)).await;
    // A task that would have expired long ago but already ended is of no timer's concern.
    let ended = queued(&store, queued_since(60, five_minutes)).await;
    store
        .transition_task(&Transition::new(ended.id(), None, TaskEvent::Cancel, now))
        .await
        .expect("cancelled");

    // Assigned (the acknowledge timeout is one minute): 3 minutes and 2 minutes ago are
    // overdue, 30 seconds ago is not.
    let fresh = || async { queued(&store, task("acme")).await };
    let unacknowledged_longest = assign(&store, &fresh().await, i, ago(3), None).await;
    let unacknowledged = assign(&store, &fresh().await, i, ago(2), None).await;
    assign(&store, &fresh().await, i, now - TimeDelta::seconds(30), None).await;

    // Running with the default 30-minute execution timeout: acquired 45 and 40 minutes
    // ago (overrun), 10 minutes ago (not), and 40 minutes ago but kept alive by a heartbeat.
    let overrun_longest = assign(&store, &fresh().await, i, ago(46), Some(ago(45))).await;
    let overrun = assign(&store, &fresh().await, i, ago(41), Some(ago(40))).await;
    assign(&store, &fresh().await, i, ago(11), Some(ago(10))).await;
    let alive = assign(&store, &fresh().await, i, ago(41), Some(ago(40))).await;
    store
        .extend_run_deadlines(&[(alive.id(), alive.attempt, ago(1))])
        .await
        .expect("extended");

    let due = store.due_tasks(&timers(now, ago(1), 100)).await.expect("due");
    assert_eq!(ids(&due.expired), [expired_long_ago.id(), expired.id()]);
    assert_eq!(
        ids(&due.unacknowledged),
        [unacknowledged_longest.id(), unacknowledged.id()]
    );
    assert_eq!(ids(&due.overrun), [overrun_longest.id(), overrun.id()]);
    assert_eq!(
        due.overrun[0],
        store.get_task(overrun_longest.id()).await.expect("by id"),
        "due tasks are whole tasks"
    );

    // The limit applies to each kind, keeping the oldest due.
    let first = store.due_tasks(&timers(now, ago(1), 1)).await.expect("due");
    assert_eq!(
        (ids(&first.expired), ids(&first.unacknowledged), ids(&first.overrun)),
        (
            vec![expired_long_ago.id()],
            vec![unacknowledged_longest.id()],
            vec![overrun_longest.id()]
        )
    );
    // Nothing is due before the earliest deadline.
    let early = store.due_tasks(&timers(ago(60), ago(60), 100)).await.expect("due");
    assert_eq!(early, crate::DueTasks::default());
}

pub async fn due_tasks_finds_the_tasks_of_instances_whose_heartbeat_is_too_old(store: Arc<dyn Store>) {
    let (g, instances) = fleet(&store, "acme", "k8s", 1, 5).await;
    let beating = instances[0].id;
    let now = now();
    let ago = |s: i64| now - TimeDelta::seconds(s);
    // An instance whose last heartbeat is 10 s old; the other beat just now.
    let mut silent = instance(g.id, instances[0].token_id, "silent-host", 5);
    silent.last_heartbeat_at = ago(10);
    store
        .register_instance(&silent, &secret(SecretKind::Session).hash())
        .await
        .expect("instance stored");
    store.record_heartbeats(&[(beating, now)]).await.expect("beat");
    let fresh = || async { queued(&store, task("acme")).await };
    let assigned = assign(&store, &fresh().await, silent.id, ago(2), None).await;
    let running = assign(&store, &fresh().await, silent.id, ago(1), Some(ago(1))).await;
    assign(&store, &fresh().await, beating, ago(3), Some(ago(3))).await;
    fresh().await;
    let lost_before = |cutoff: DateTime<Utc>, limit: u32| {
        let store = store.clone();
        async move {
            let due = store
                .due_tasks(&DueQuery {
                    heartbeat_before: cutoff,
                    ..timers(now, ago(60), limit)
                })
                .await
                .expect("due");
            assert_eq!(
                (due.expired.len(), due.unacknowledged.len(), due.overrun.len()),
                (0, 0, 0),
                "no other timer is due"
            );
            due.lost
        }
    };

    // A 5 s cut-off finds the silent instance's two tasks, in assignment order, whole.
    let lost = lost_before(ago(5), 100).await;
    assert_eq!(ids(&lost), [assigned.id(), running.id()]);
    assert_eq!(
        lost.iter().map(|t| t.state).collect::<Vec<_>>(),
        [TaskState::Assigned, TaskState::Running]
    );
    // A cut-off older than every heartbeat finds nothing.
    assert!(lost_before(ago(11), 100).await.is_empty());
    // One after every heartbeat finds every held task; the limit applies to this kind too.
    assert_eq!(lost_before(now + TimeDelta::seconds(1), 100).await.len(), 3);
    assert_eq!(lost_before(now + TimeDelta::seconds(1), 1).await.len(), 1);
}

pub async fn heartbeats_push_run_deadlines_forward_but_never_back(store: Arc<dyn Store>) {
    let (_, instances) = fleet(&store, "acme", "k8s", 2, 5).await;
    let (a, b) = (instances[0].id, instances[1].id);
    let mut spec = task("acme");
    spec.execution_timeout = Duration::from_secs(60);
    spec.max_attempts = 2;
    let t = queued(&store, spec).await;
    assert_eq!(t.run_deadline, None, "a queued task has no run deadline");
    let at = now();
    let secs = |s: i64| at + TimeDelta::seconds(s);

    let assigned = assign(&store, &t, a, at, None).await;
    assert_eq!(assigned.run_deadline, None, "nor has an assigned one");
    let running = store
        .transition_task(&Transition::new(t.id(), Some(Attempt(1)), TaskEvent::Acquire, at))
        .await
        .expect("acquired");
    assert_eq!(running.run_deadline, Some(secs(60)), "acquire time + execution timeout");
    assert_eq!(run_deadline(&store, t.id()).await, Some(secs(60)));

    assert_eq!(store.extend_run_deadlines(&[]).await.expect("empty batch"), 0);
    let beat = |s: i64| (t.id(), Attempt(1), secs(s));
    assert_eq!(store.extend_run_deadlines(&[beat(10)]).await.expect("extended"), 1);
    assert_eq!(run_deadline(&store, t.id()).await, Some(secs(70)));
    // A late beat, older than the last one, never moves the deadline back.
    assert_eq!(store.extend_run_deadlines(&[beat(5)]).await.expect("ignored"), 0);
    assert_eq!(run_deadline(&store, t.id()).await, Some(secs(70)));
    // Duplicates in one batch count once, the latest winning whatever the order.
    assert_eq!(
        store
            .extend_run_deadlines(&[beat(20), beat(15)])
            .await
            .expect("extended"),
        1
    );
    assert_eq!(run_deadline(&store, t.id()).await, Some(secs(80)));

    // In one batch: a stale attempt, a queued task, an assigned task and an unknown task
    // are ignored; only the running task's own attempt counts.
    let waiting = queued(&store, task("acme")).await;
    let unacknowledged = assign(&store, &queued(&store, task("acme")).await, b, at, None).await;
    let batch = [
        (t.id(), Attempt(7), secs(500)),
        (waiting.id(), Attempt(0), secs(30)),
        (unacknowledged.id(), Attempt(1), secs(30)),
        (TaskId::new(), Attempt(1), secs(30)),
        beat(30),
    ];
    assert_eq!(store.extend_run_deadlines(&batch).await.expect("extended"), 1);
    assert_eq!(run_deadline(&store, t.id()).await, Some(secs(90)));
    assert_eq!(run_deadline(&store, waiting.id()).await, None);
    assert_eq!(run_deadline(&store, unacknowledged.id()).await, None);

    // Progress leaves the deadline alone.
    let progressed = store
        .record_progress(t.id(), Attempt(1), &serde_json::json!({"percent": 50}), secs(31))
        .await
        .expect("recorded");
    assert_eq!(progressed.run_deadline, Some(secs(90)));

    // Leaving `running` clears it; the next run gets a fresh one, which beats of the
    // previous attempt no longer reach.
    let requeued = store
        .transition_task(&Transition::new(t.id(), Some(Attempt(1)), TaskEvent::Requeue, secs(40)))
        .await
        .expect("requeued");
    assert_eq!((requeued.state, requeued.run_deadline), (TaskState::Queued, None));
    assert_eq!(run_deadline(&store, t.id()).await, None);
    assign(&store, &requeued, b, secs(41), Some(secs(42))).await;
    assert_eq!(run_deadline(&store, t.id()).await, Some(secs(102)));
    assert_eq!(store.extend_run_deadlines(&[beat(1000)]).await.expect("ignored"), 0);
    assert_eq!(run_deadline(&store, t.id()).await, Some(secs(102)));
    let done = store
        .transition_task(&Transition::new(t.id(), Some(Attempt(2)), TaskEvent::Succeed, secs(50)))
        .await
        .expect("succeeded");
    assert_eq!((done.state, done.run_deadline), (TaskState::Succeeded, None));
    assert_eq!(
        store
            .extend_run_deadlines(&[(t.id(), Attempt(2), secs(60))])
            .await
            .expect("ignored"),
        0,
        "a finished task is not kept alive"
    );
    assert_eq!(run_deadline(&store, t.id()).await, None);
}
