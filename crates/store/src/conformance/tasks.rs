//! Conformance cases for the task queue: insertion and idempotency, the atomic claim,
//! fenced transitions and attempts.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::TimeDelta;
use switchboard_domain::{
    Attempt, Capability, Failure, FailureReason, Idempotency, InstanceId, TaskEvent, TaskId, TaskState,
};

use super::fixtures::{fleet, ident, now, queued, selectors, task};
use crate::{Claim, Conflict, Inserted, Store, StoreError, TaskQuery, Transition};

fn claimed(c: Claim) -> switchboard_domain::Task {
    match c {
        Claim::Claimed(t) => *t,
        other => panic!("expected a claim, got {other:?}"),
    }
}

pub async fn tasks_round_trip_every_field(store: Arc<dyn Store>) {
    let mut t = task("acme/eng/web");
    t.payload = serde_json::json!({"nested": {"list": [1, 2.5, "three", null, true]}, "unicode": "ünï"});
    t.selectors = selectors(&["gpu", "linux"]);
    t.capabilities = vec![
        Capability::http("https://artifacts.internal/health").expect("valid"),
        Capability::tcp("db.internal", 5432).expect("valid"),
    ];
    t.priority = -7;
    t.assign_timeout = std::time::Duration::from_millis(1500);
    t.execution_timeout = std::time::Duration::from_secs(90);
    t.max_attempts = 3;
    t.wait_for_delegate = true;
    t.idempotency = Some(Idempotency {
        key: "run-42".into(),
        fingerprint: "abc".into(),
    });
    let stored = match store.insert_task(&t).await.expect("inserted") {
        Inserted::Created(task) => task,
        other => panic!("expected a new task, got {other:?}"),
    };
    assert_eq!(stored.spec, t);
    assert_eq!(
        (
            stored.state,
            stored.attempt,
            stored.runs,
            stored.instance_id,
            stored.run_deadline
        ),
        (TaskState::Queued, Attempt(0), 0, None, None)
    );
    assert_eq!(stored.updated_at, t.created_at);
    assert_eq!(store.get_task(t.id).await.expect("by id"), stored);
    assert!(matches!(
        store.get_task(TaskId::new()).await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn idempotent_insert_returns_the_first_task_and_refuses_another_body(store: Arc<dyn Store>) {
    let mut first = task("acme");
    first.idempotency = Some(Idempotency {
        key: "deploy-7".into(),
        fingerprint: "body-a".into(),
    });
    let created = queued(&store, first.clone()).await;

    let mut retry = task("acme");
    retry.idempotency = first.idempotency.clone();
    match store.insert_task(&retry).await.expect("a retry succeeds") {
        Inserted::Existing(t) => assert_eq!(t, created, "the retry gets the original task"),
        other => panic!("expected the existing task, got {other:?}"),
    }

    let mut other_body = task("acme");
    other_body.idempotency = Some(Idempotency {
        key: "deploy-7".into(),
        fingerprint: "body-b".into(),
    });
    let err = store.insert_task(&other_body).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(Conflict::IdempotencyMismatch(_))),
        "{err:?}"
    );

    // Keys are per account.
    let mut elsewhere = task("globex");
    elsewhere.idempotency = other_body.idempotency.clone();
    assert!(matches!(
        store.insert_task(&elsewhere).await.expect("inserted"),
        Inserted::Created(_)
    ));
    let all = store
        .list_tasks(&TaskQuery {
            limit: 100,
            ..TaskQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(all.items.len(), 2, "no duplicate was stored");
}

pub async fn queued_tasks_come_highest_priority_first_then_oldest(store: Arc<dyn Store>) {
    let base = now();
    let mut ids = BTreeMap::new();
    for (name, priority, age) in [
        ("low-old", -5, 30),
        ("high-new", 10, 0),
        ("mid-old", 0, 20),
        ("mid-new", 0, 10),
    ] {
        let mut t = task("acme");
        t.priority = priority;
        t.created_at = base - TimeDelta::seconds(age);
        ids.insert(t.id, name);
        queued(&store, t).await;
    }
    queued(&store, task("globex")).await;
    let order: Vec<&str> = store
        .queued_tasks(Some(&ident("acme")), 10)
        .await
        .expect("queue")
        .iter()
        .map(|t| ids[&t.id()])
        .collect();
    assert_eq!(order, ["high-new", "mid-old", "mid-new", "low-old"]);
    // Aging: a low priority waits, but not for ever. Waited 2 minutes, priority -5 has
    // risen to 7, ahead of a fresh 6 and behind a fresh 8.
    let mut old = task("initech");
    old.priority = -5;
    old.created_at = base - TimeDelta::seconds(120);
    let old = queued(&store, old).await;
    for priority in [6, 8] {
        let mut fresh = task("initech");
        fresh.priority = priority;
        fresh.created_at = base;
        queued(&store, fresh).await;
    }
    let order: Vec<i32> = store
        .queued_tasks(Some(&ident("initech")), 10)
        .await
        .expect("queue")
        .iter()
        .map(|t| t.spec.priority)
        .collect();
    assert_eq!(
        order,
        [8, -5, 6],
        "the old task ({}) by its effective priority",
        old.id()
    );
    assert_eq!(store.queued_tasks(None, 10).await.expect("queue").len(), 8);
    assert_eq!(store.queued_tasks(None, 2).await.expect("queue").len(), 2);
}

pub async fn a_claim_assigns_once_and_respects_capacity(store: Arc<dyn Store>) {
    let (_, instances) = fleet(&store, "acme", "k8s", 1, 2).await;
    let i = instances[0].id;
    let t1 = queued(&store, task("acme")).await;
    let t2 = queued(&store, task("acme")).await;
    let t3 = queued(&store, task("acme")).await;
    let at = now();

    let c1 = claimed(store.claim_task(t1.id(), i, at).await.expect("claim"));
    assert_eq!(
        (c1.state, c1.attempt, c1.instance_id, c1.assigned_at),
        (TaskState::Assigned, Attempt(1), Some(i), Some(at))
    );
    assert_eq!(
        store.claim_task(t1.id(), i, at).await.expect("claim"),
        Claim::TaskNotQueued
    );
    claimed(store.claim_task(t2.id(), i, at).await.expect("claim"));
    assert_eq!(
        store.claim_task(t3.id(), i, at).await.expect("claim"),
        Claim::InstanceFull
    );
    assert_eq!(
        store.get_task(t3.id()).await.expect("by id").state,
        TaskState::Queued,
        "a refused claim changes nothing"
    );
    assert_eq!(store.get_instance(i).await.expect("by id").active_tasks, 2);
    assert_eq!(
        store.claim_task(t3.id(), InstanceId::new(), at).await.expect("claim"),
        Claim::InstanceGone
    );

    let attempts = store.task_attempts(t1.id()).await.expect("attempts");
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        (attempts[0].attempt, attempts[0].instance_id, attempts[0].outcome),
        (Attempt(1), i, None)
    );
}

/// 16 claimers race over 1,000 queued tasks and 50 instances of capacity 10 (500 slots).
/// Every task is claimed at most once, exactly 500 claims succeed, and no instance is
/// ever above capacity, as seen by an observer polling throughout the race.
pub async fn claims_are_exact_under_concurrency(store: Arc<dyn Store>) {
    const TASKS: usize = 1_000;
    const INSTANCES: usize = 50;
    const CAPACITY: u32 = 10;
    const CLAIMERS: usize = 16;

    let (_, instances) = fleet(&store, "acme", "k8s", INSTANCES, CAPACITY).await;
    let instance_ids: Arc<Vec<InstanceId>> = Arc::new(instances.iter().map(|i| i.id).collect());
    let mut task_ids = Vec::with_capacity(TASKS);
    for _ in 0..TASKS {
        task_ids.push(queued(&store, task("acme")).await.id());
    }
    let task_ids = Arc::new(task_ids);

    let racing = Arc::new(AtomicBool::new(true));
    let observer = {
        let (store, racing) = (store.clone(), racing.clone());
        tokio::spawn(async move {
            let mut looks = 0u32;
            while racing.load(Ordering::Relaxed) || looks == 0 {
                for i in store.list_instances(None).await.expect("list") {
                    assert!(
                        i.active_tasks <= CAPACITY,
                        "instance {} above capacity: {}",
                        i.id,
                        i.active_tasks
                    );
                }
                looks += 1;
                tokio::task::yield_now().await;
            }
            looks
        })
    };

    let claimers = (0..CLAIMERS).map(|c| {
        let (store, tasks, instances) = (store.clone(), task_ids.clone(), instance_ids.clone());
        tokio::spawn(async move {
            // Claimers start close together and walk the same tasks so they collide
            // constantly; each remembers which instances told it they are full.
            let mut full = HashSet::new();
            let mut won = Vec::new();
            let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (c as u64 + 1);
            for step in 0..tasks.len() {
                if full.len() == instances.len() {
                    break;
                }
                let t = tasks[(c * 3 + step) % tasks.len()];
                loop {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let open: Vec<_> = instances.iter().filter(|i| !full.contains(*i)).collect();
                    let Some(&&i) = open.get(rng as usize % open.len().max(1)) else {
                        break;
                    };
                    match store.claim_task(t, i, now()).await.expect("claim") {
                        Claim::Claimed(task) => {
                            assert_eq!(task.instance_id, Some(i));
                            won.push((t, i));
                            break;
                        }
                        Claim::TaskNotQueued => break,
                        Claim::InstanceFull => {
                            full.insert(i);
                        }
                        Claim::InstanceGone => panic!("no instance was removed"),
                        Claim::InstanceNotTaking => panic!("no instance drains or has a limit of tasks"),
                        Claim::Limited { .. } => panic!("no task has a concurrency key"),
                    }
                }
            }
            won
        })
    });
    let wins: Vec<(TaskId, InstanceId)> = futures::future::join_all(claimers)
        .await
        .into_iter()
        .flat_map(|r| r.expect("claimer finished"))
        .collect();
    racing.store(false, Ordering::Relaxed);
    assert!(observer.await.expect("observer saw no instance above capacity") > 0);

    let distinct: HashSet<TaskId> = wins.iter().map(|w| w.0).collect();
    assert_eq!(distinct.len(), wins.len(), "a task was claimed twice");
    assert_eq!(
        wins.len(),
        INSTANCES * CAPACITY as usize,
        "every slot was filled exactly once"
    );

    let mut per_instance: BTreeMap<InstanceId, u32> = BTreeMap::new();
    for (_, i) in &wins {
        *per_instance.entry(*i).or_default() += 1;
    }
    for i in store.list_instances(None).await.expect("list") {
        let won = per_instance.get(&i.id).copied().unwrap_or(0);
        assert_eq!(i.active_tasks, won, "the stored count matches the claims");
        assert!(won <= CAPACITY);
    }
    let assigned = store
        .list_tasks(&TaskQuery {
            states: vec![TaskState::Assigned],
            limit: 500,
            ..TaskQuery::default()
        })
        .await;
    let assigned = assigned.expect("list").items;
    assert_eq!(assigned.len(), wins.len());
    let winners: BTreeMap<TaskId, InstanceId> = wins.into_iter().collect();
    for t in assigned {
        assert_eq!(
            t.instance_id,
            winners.get(&t.id()).copied(),
            "the store agrees with the winner"
        );
        assert_eq!(t.attempt, Attempt(1));
    }
}

pub async fn transitions_are_fenced_by_attempt(store: Arc<dyn Store>) {
    let (_, instances) = fleet(&store, "acme", "k8s", 2, 5).await;
    let t = queued(&store, task("acme")).await;
    let at = now();
    claimed(store.claim_task(t.id(), instances[0].id, at).await.expect("claim"));
    // The first instance never acquires; the assignment is released and given to another.
    store
        .transition_task(&Transition::new(t.id(), Some(Attempt(1)), TaskEvent::Release, at))
        .await
        .expect("released");
    let second = claimed(store.claim_task(t.id(), instances[1].id, at).await.expect("claim"));
    assert_eq!(second.attempt, Attempt(2));

    // The first instance comes back from a network split and reports on attempt 1.
    for event in [TaskEvent::Acquire, TaskEvent::Succeed, TaskEvent::Fail] {
        let err = store
            .transition_task(&Transition::new(t.id(), Some(Attempt(1)), event, at))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Conflict(Conflict::StaleAttempt {
                    presented: Attempt(1),
                    current: Attempt(2)
                })
            ),
            "{err:?}"
        );
    }
    assert_eq!(
        store.get_task(t.id()).await.expect("by id"),
        second,
        "stale reports changed nothing"
    );
    let running = store
        .transition_task(&Transition::new(t.id(), Some(Attempt(2)), TaskEvent::Acquire, at))
        .await
        .expect("ok");
    assert_eq!((running.state, running.runs), (TaskState::Running, 1));
}

pub async fn a_report_from_an_instance_that_does_not_hold_the_attempt_changes_nothing(store: Arc<dyn Store>) {
    let (_, instances) = fleet(&store, "acme", "k8s", 2, 5).await;
    let t = queued(&store, task("acme")).await;
    let at = now();
    let assigned = claimed(store.claim_task(t.id(), instances[0].id, at).await.expect("claim"));
    // The other instance names the current attempt, but it was not offered to it.
    for event in [TaskEvent::Acquire, TaskEvent::Succeed, TaskEvent::Fail] {
        let transition = Transition::new(t.id(), Some(Attempt(1)), event, at).held_by(instances[1].id);
        let err = store.transition_task(&transition).await.unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Conflict(Conflict::NotHolder {
                    attempt: Attempt(1),
                    state: TaskState::Assigned
                })
            ),
            "{err:?}"
        );
    }
    assert_eq!(
        store.get_task(t.id()).await.expect("by id"),
        assigned,
        "nothing changed"
    );
    // A stale attempt is refused as stale whoever presents it.
    let stale = Transition::new(t.id(), Some(Attempt(0)), TaskEvent::Acquire, at).held_by(instances[0].id);
    assert!(matches!(
        store.transition_task(&stale).await.unwrap_err(),
        StoreError::Conflict(Conflict::StaleAttempt { .. })
    ));
    // The holder goes through, and once the task has ended nobody holds it.
    let holder = |event| Transition::new(t.id(), Some(Attempt(1)), event, at).held_by(instances[0].id);
    let running = store
        .transition_task(&holder(TaskEvent::Acquire))
        .await
        .expect("acquire");
    assert_eq!(running.state, TaskState::Running);
    let done = store
        .transition_task(&holder(TaskEvent::Succeed))
        .await
        .expect("succeed");
    assert_eq!(done.state, TaskState::Succeeded);
    let again = store.transition_task(&holder(TaskEvent::Succeed)).await.unwrap_err();
    assert!(
        matches!(
            again,
            StoreError::Conflict(Conflict::NotHolder { .. } | Conflict::Transition(_))
        ),
        "{again:?}"
    );
}

pub async fn transitions_follow_the_state_machine_and_free_slots(store: Arc<dyn Store>) {
    let (_, instances) = fleet(&store, "acme", "k8s", 1, 1).await;
    let i = instances[0].id;
    let t = queued(&store, task("acme")).await;
    let at = now();
    let later = at + TimeDelta::seconds(3);

    // A queued task cannot succeed.
    let err = store
        .transition_task(&Transition::new(t.id(), None, TaskEvent::Succeed, at))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(Conflict::Transition(_))), "{err:?}");
    // Assignment goes through claim_task only.
    let err = store
        .transition_task(&Transition::new(t.id(), None, TaskEvent::Assign, at))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(Conflict::Transition(_))), "{err:?}");

    claimed(store.claim_task(t.id(), i, at).await.expect("claim"));
    let acquired = Transition::new(t.id(), Some(Attempt(1)), TaskEvent::Acquire, at);
    let running = store.transition_task(&acquired).await.expect("acquired");
    let budget = TimeDelta::from_std(t.spec.execution_timeout).expect("in range");
    assert_eq!(
        running.run_deadline,
        Some(at + budget),
        "acquire starts the run deadline"
    );
    assert_eq!(store.get_task(t.id()).await.expect("by id"), running);
    let mut done = Transition::new(t.id(), Some(Attempt(1)), TaskEvent::Succeed, later);
    done.result = Some(serde_json::json!({"exit": 0}));
    let finished = store.transition_task(&done).await.expect("succeeded");
    assert_eq!(finished.state, TaskState::Succeeded);
    assert_eq!(
        (
            finished.instance_id,
            finished.finished_at,
            finished.started_at,
            finished.run_deadline
        ),
        (None, Some(later), Some(at), None)
    );
    assert_eq!(finished.result, Some(serde_json::json!({"exit": 0})));
    assert_eq!(
        store.get_instance(i).await.expect("by id").active_tasks,
        0,
        "the slot is free again"
    );
    let attempts = store.task_attempts(t.id()).await.expect("attempts");
    assert_eq!(
        (attempts[0].acquired_at, attempts[0].ended_at, attempts[0].outcome),
        (Some(at), Some(later), Some(TaskState::Succeeded))
    );
    // A terminal task never changes again.
    let err = store
        .transition_task(&Transition::new(t.id(), None, TaskEvent::Cancel, later))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(Conflict::Transition(_))), "{err:?}");

    // Cancel frees the slot of an assigned task; failures keep their reason.
    let t2 = queued(&store, task("acme")).await;
    claimed(
        store
            .claim_task(t2.id(), i, at)
            .await
            .expect("claim, the slot was freed"),
    );
    store
        .transition_task(&Transition::new(t2.id(), None, TaskEvent::Cancel, later))
        .await
        .expect("cancelled");
    assert_eq!(store.get_instance(i).await.expect("by id").active_tasks, 0);
    let t3 = queued(&store, task("acme")).await;
    let mut fail = Transition::new(t3.id(), None, TaskEvent::Fail, later);
    fail.failure = Some(Failure::new(FailureReason::NoEligibleDelegate, "0/1 eligible"));
    let failed = store.transition_task(&fail).await.expect("failed");
    assert_eq!((failed.state, failed.failure), (TaskState::Failed, fail.failure));
    let t4 = queued(&store, task("acme")).await;
    let expired = store
        .transition_task(&Transition::new(t4.id(), None, TaskEvent::Expire, later))
        .await;
    assert_eq!(expired.expect("expired").state, TaskState::Expired);
}

pub async fn a_lost_running_task_requeues_and_runs_again_on_another_instance(store: Arc<dyn Store>) {
    let (_, instances) = fleet(&store, "acme", "k8s", 2, 1).await;
    let (a, b) = (instances[0].id, instances[1].id);
    let mut spec = task("acme");
    spec.max_attempts = 2;
    let t = queued(&store, spec).await;
    let at = now();
    claimed(store.claim_task(t.id(), a, at).await.expect("claim"));
    store
        .transition_task(&Transition::new(t.id(), Some(Attempt(1)), TaskEvent::Acquire, at))
        .await
        .expect("ok");
    let requeued = store
        .transition_task(&Transition::new(t.id(), Some(Attempt(1)), TaskEvent::Requeue, at))
        .await
        .expect("ok");
    assert!(requeued.attempts_remain());
    assert_eq!(
        (requeued.state, requeued.instance_id, requeued.runs),
        (TaskState::Queued, None, 1)
    );
    assert_eq!(store.get_instance(a).await.expect("by id").active_tasks, 0);

    claimed(store.claim_task(t.id(), b, at).await.expect("claim"));
    let rerun = store
        .transition_task(&Transition::new(t.id(), Some(Attempt(2)), TaskEvent::Acquire, at))
        .await
        .expect("ok");
    assert_eq!((rerun.runs, rerun.attempts_remain()), (2, false));
    let attempts = store.task_attempts(t.id()).await.expect("attempts");
    let summary: Vec<_> = attempts.iter().map(|a| (a.attempt, a.instance_id, a.outcome)).collect();
    assert_eq!(
        summary,
        [(Attempt(1), a, Some(TaskState::Queued)), (Attempt(2), b, None)]
    );
}

pub async fn progress_is_fenced_and_only_for_running_tasks(store: Arc<dyn Store>) {
    let (_, instances) = fleet(&store, "acme", "k8s", 1, 5).await;
    let t = queued(&store, task("acme")).await;
    let at = now();
    let p = serde_json::json!({"percent": 40});
    let err = store.record_progress(t.id(), Attempt(0), &p, at).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(Conflict::TaskState(TaskState::Queued))),
        "{err:?}"
    );
    claimed(store.claim_task(t.id(), instances[0].id, at).await.expect("claim"));
    store
        .transition_task(&Transition::new(t.id(), Some(Attempt(1)), TaskEvent::Acquire, at))
        .await
        .expect("ok");
    let err = store.record_progress(t.id(), Attempt(7), &p, at).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(Conflict::StaleAttempt { .. })),
        "{err:?}"
    );
    let later = at + TimeDelta::seconds(1);
    let updated = store
        .record_progress(t.id(), Attempt(1), &p, later)
        .await
        .expect("recorded");
    assert_eq!((updated.progress, updated.updated_at), (Some(p), later));
}

pub async fn task_lists_filter_and_paginate_newest_first(store: Arc<dyn Store>) {
    let (_, instances) = fleet(&store, "acme", "k8s", 1, 5).await;
    let mut made = Vec::new();
    for path in ["acme", "acme/eng", "acme/eng/web", "acme/ops", "globex"] {
        made.push(queued(&store, task(path)).await.id());
    }
    let mut check = task("acme/eng");
    check.task_type = switchboard_domain::TaskType(ident("http_check"));
    let check = queued(&store, check).await.id();
    claimed(store.claim_task(made[1], instances[0].id, now()).await.expect("claim"));

    let ids = |page: crate::Page<switchboard_domain::Task>| page.items.iter().map(|t| t.id()).collect::<Vec<_>>();
    let all = store
        .list_tasks(&TaskQuery {
            limit: 100,
            ..TaskQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(
        ids(all),
        [check, made[4], made[3], made[2], made[1], made[0]],
        "newest first"
    );

    let q = |within: &str| TaskQuery {
        within: Some(super::fixtures::scope(within)),
        limit: 100,
        ..TaskQuery::default()
    };
    assert_eq!(
        ids(store.list_tasks(&q("acme/eng")).await.expect("list")),
        [check, made[2], made[1]]
    );
    let assigned = TaskQuery {
        states: vec![TaskState::Assigned],
        ..q("acme")
    };
    assert_eq!(ids(store.list_tasks(&assigned).await.expect("list")), [made[1]]);
    let typed = TaskQuery {
        task_type: Some(switchboard_domain::TaskType(ident("http_check"))),
        ..q("acme")
    };
    assert_eq!(ids(store.list_tasks(&typed).await.expect("list")), [check]);

    // Pages of two walk the whole list without gaps or repeats.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_tasks(&TaskQuery {
                before: cursor,
                limit: 2,
                ..TaskQuery::default()
            })
            .await;
        let page = page.expect("page");
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|t| t.id()));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, [check, made[4], made[3], made[2], made[1], made[0]]);
}
