//! Conformance cases for fleet control: pauses, draining, single-use instances and the
//! JIT credentials that register them.

use std::sync::Arc;

use chrono::TimeDelta;
use switchboard_domain::{JitGrant, Pause, SecretKind, TaskEvent};

use super::fixtures::{fleet, instance, now, queued, secret, task, token};
use crate::{Claim, Store, Transition};

pub async fn pauses_of_a_group_and_an_instance_round_trip_and_lift(store: Arc<dyn Store>) {
    let (group, instances) = fleet(&store, "acme", "k8s", 1, 5).await;
    let pause = Pause {
        note: "kernel upgrade".into(),
        // Millisecond precision: what every backend keeps.
        since: chrono::DateTime::from_timestamp_millis(now().timestamp_millis()).unwrap(),
        until: chrono::DateTime::from_timestamp_millis((now() + TimeDelta::hours(2)).timestamp_millis()),
    };
    let paused = store.set_group_pause(group.id, Some(&pause)).await.expect("paused");
    assert_eq!(paused.paused.as_ref(), Some(&pause));
    assert_eq!(
        store.get_group(group.id).await.expect("get").paused,
        Some(pause.clone())
    );
    let lifted = store.set_group_pause(group.id, None).await.expect("lifted");
    assert_eq!(lifted.paused, None);

    let i = store
        .set_instance_pause(instances[0].id, Some(&pause))
        .await
        .expect("instance paused");
    assert_eq!(i.paused.as_ref(), Some(&pause));
    let listed = store.list_instances(Some(group.id)).await.expect("list");
    assert_eq!(listed[0].paused.as_ref(), Some(&pause));
    let i = store.set_instance_pause(instances[0].id, None).await.expect("lifted");
    assert_eq!(i.paused, None);
    assert!(
        store
            .set_instance_pause(instance(group.id, i.token_id, "x", 1).id, None)
            .await
            .is_err()
    );
}

pub async fn a_draining_instance_is_never_claimed_for(store: Arc<dyn Store>) {
    let (_, instances) = fleet(&store, "acme", "k8s", 1, 5).await;
    let id = instances[0].id;
    let first = queued(&store, task("acme")).await;
    assert!(matches!(
        store.claim_task(first.id(), id, now()).await.expect("claim"),
        Claim::Claimed(_)
    ));
    let drained = store.set_instance_draining(id).await.expect("draining");
    assert!(drained.draining);
    assert!(store.get_instance(id).await.expect("get").draining);
    // Free slots remain, and still nothing is claimed for it: the store refuses, whatever
    // snapshot a replica decided on.
    let second = queued(&store, task("acme")).await;
    assert_eq!(
        store.claim_task(second.id(), id, now()).await.expect("claim"),
        Claim::InstanceNotTaking
    );
    assert_eq!(
        store.get_task(second.id()).await.expect("get").state,
        switchboard_domain::TaskState::Queued
    );
    // What it was offered before can still be given back, fenced by its attempt.
    let back = store
        .transition_task(&Transition::new(
            first.id(),
            Some(first.attempt.next()),
            TaskEvent::Release,
            now(),
        ))
        .await
        .expect("released");
    assert_eq!(back.state, switchboard_domain::TaskState::Queued);
}

pub async fn a_single_use_instance_takes_its_tasks_and_is_retired_once_they_ended(store: Arc<dyn Store>) {
    let (group, instances) = fleet(&store, "acme", "k8s", 1, 5).await;
    let mut once = instance(group.id, instances[0].token_id, "pod-1", 5);
    once.max_tasks = Some(1);
    store
        .register_instance(&once, &secret(SecretKind::Session).hash())
        .await
        .expect("registered");
    let first = queued(&store, task("acme")).await;
    let second = queued(&store, task("acme")).await;
    let Claim::Claimed(claimed) = store.claim_task(first.id(), once.id, now()).await.expect("claim") else {
        panic!("the first claim holds");
    };
    assert_eq!(
        store.claim_task(second.id(), once.id, now()).await.expect("claim"),
        Claim::InstanceNotTaking,
        "one task in its life, though 4 slots are free"
    );
    let stored = store.get_instance(once.id).await.expect("get");
    assert_eq!(
        (stored.max_tasks, stored.tasks_taken, stored.active_tasks),
        (Some(1), 1, 1)
    );
    // Holding its task, it stays; an instance without a limit is never retired.
    assert_eq!(store.retire_spent_instances(now()).await.expect("sweep"), vec![]);

    let released = Transition::new(first.id(), Some(claimed.attempt), TaskEvent::Release, now());
    store.transition_task(&released).await.expect("released");
    // Given back, the task does not give the instance another go.
    assert_eq!(
        store.claim_task(first.id(), once.id, now()).await.expect("claim"),
        Claim::InstanceNotTaking
    );
    assert_eq!(store.retire_spent_instances(now()).await.expect("sweep"), vec![once.id]);
    assert!(store.get_instance(once.id).await.is_err(), "removed");
    assert!(store.get_instance(instances[0].id).await.is_ok(), "the other one stays");
    assert_eq!(store.retire_spent_instances(now()).await.expect("sweep"), vec![]);
}

pub async fn a_jit_credential_registers_once_before_it_expires(store: Arc<dyn Store>) {
    let (group, _) = fleet(&store, "acme", "k8s", 0, 5).await;
    let mint = |name: &str, expires_in: TimeDelta| {
        let mut t = token("acme", name);
        t.jit = Some(JitGrant {
            group_id: group.id,
            expires_at: chrono::DateTime::from_timestamp_millis((now() + expires_in).timestamp_millis()).unwrap(),
            used_at: None,
        });
        t
    };
    let fresh = mint("jit-1", TimeDelta::hours(1));
    let hash = secret(SecretKind::DelegateToken).hash();
    store.create_token(&fresh, &hash).await.expect("stored");
    assert_eq!(
        store.token_by_secret(&hash).await.expect("found").as_ref(),
        Some(&fresh)
    );
    let named = store.list_tokens(None).await.expect("list");
    assert!(
        named.iter().all(|t| t.jit.is_none()),
        "JIT credentials are not listed: {named:?}"
    );

    assert!(store.use_jit_token(fresh.id, now()).await.expect("use"));
    assert!(!store.use_jit_token(fresh.id, now()).await.expect("use"), "once only");
    assert!(
        store
            .get_token(fresh.id)
            .await
            .expect("get")
            .jit
            .unwrap()
            .used_at
            .is_some()
    );

    let stale = mint("jit-2", TimeDelta::minutes(-1));
    store
        .create_token(&stale, &secret(SecretKind::DelegateToken).hash())
        .await
        .expect("stored");
    assert!(!store.use_jit_token(stale.id, now()).await.expect("use"), "expired");
    // A plain token is no JIT credential.
    let (_, plain) = fleet(&store, "acme", "edge", 1, 5).await;
    assert!(!store.use_jit_token(plain[0].token_id, now()).await.expect("use"));

    // Past its expiry and unused by any instance: swept. The fresh one is not expired.
    assert_eq!(store.remove_expired_jit_tokens(now()).await.expect("sweep"), 1);
    assert!(store.get_token(stale.id).await.is_err());
    assert!(store.get_token(fresh.id).await.is_ok());

    // Using it and storing the instance is one step: once, and only while it is fresh.
    let third = mint("jit-3", TimeDelta::hours(1));
    store
        .create_token(&third, &secret(SecretKind::DelegateToken).hash())
        .await
        .expect("stored");
    let mut once = instance(group.id, third.id, "pod-1", 1);
    once.max_tasks = Some(1);
    assert!(
        store
            .register_jit_instance(&once, &secret(SecretKind::Session).hash(), now())
            .await
            .expect("registered with the JIT credential")
    );
    let again = instance(group.id, third.id, "pod-2", 1);
    assert!(
        !store
            .register_jit_instance(&again, &secret(SecretKind::Session).hash(), now())
            .await
            .expect("refused")
    );
    assert!(
        store.get_instance(again.id).await.is_err(),
        "nothing stored by the refusal"
    );
    let late = instance(group.id, stale.id, "pod-3", 1);
    assert!(store.get_token(stale.id).await.is_err(), "swept above");
    assert!(
        store
            .register_jit_instance(&late, &secret(SecretKind::Session).hash(), now())
            .await
            .is_ok_and(|ok| !ok)
    );
    let fresh = third;
    // The instance it registered goes with its delegate, and so does the credential.
    store
        .delete_group(group.id)
        .await
        .expect("deleted with its instance and credential");
    assert!(store.get_instance(once.id).await.is_err());
    assert!(
        store.get_token(fresh.id).await.is_err(),
        "a JIT credential lives with its delegate"
    );
}

pub async fn the_queue_is_counted_by_shape_largest_first(store: Arc<dyn Store>) {
    use crate::{QueueQuery, QueueShape};
    use switchboard_domain::{Ident, Scope, TaskType};
    let (_, instances) = fleet(&store, "acme", "k8s", 1, 5).await;
    let gpu = |scope_path: &str| {
        let mut t = task(scope_path);
        t.selectors = super::fixtures::selectors(&["gpu"]);
        t
    };
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(queued(&store, gpu("acme/eng")).await.id());
    }
    let plain = queued(&store, task("acme")).await;
    let mut other_type = task("acme");
    other_type.task_type = TaskType(Ident::parse("deploy").unwrap());
    queued(&store, other_type).await;
    queued(&store, task("globex")).await;
    // Assigned: not waiting. Given back: waiting again, in a shape of its own (retried).
    let retried = queued(&store, task("acme")).await;
    let Claim::Claimed(claimed) = store.claim_task(retried.id(), instances[0].id, now()).await.unwrap() else {
        panic!("claimed");
    };
    let assigned = queued(&store, task("acme")).await;
    store.claim_task(assigned.id(), instances[0].id, now()).await.unwrap();
    store
        .transition_task(&Transition::new(
            retried.id(),
            Some(claimed.attempt),
            TaskEvent::Release,
            now(),
        ))
        .await
        .unwrap();

    let all = store
        .queue_shapes(&QueueQuery {
            max_shapes: 100,
            ..QueueQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(all.waiting, 7, "{all:?}");
    let counts: Vec<u64> = all.shapes.iter().map(|s| s.count).collect();
    assert_eq!(counts.iter().sum::<u64>(), 7);
    let first: &QueueShape = &all.shapes[0];
    assert_eq!(
        (first.count, first.scope.path(), first.retried),
        (3, "acme/eng".to_owned(), false)
    );
    assert_eq!(first.selectors, super::fixtures::selectors(&["gpu"]));
    ids.sort();
    assert_eq!(
        (first.oldest, first.newest),
        (ids[0], ids[2]),
        "oldest and newest by id"
    );
    let again = all
        .shapes
        .iter()
        .find(|s| s.retried)
        .expect("the given-back task, apart");
    assert_eq!((again.count, again.oldest), (1, retried.id()));
    assert!(
        all.shapes
            .iter()
            .any(|s| s.oldest == plain.id() && !s.retried && s.count == 1)
    );

    // Filters narrow; a cap keeps the largest shapes and still counts everything.
    let acme = store
        .queue_shapes(&QueueQuery {
            within: Some(Scope::parse_path("acme").unwrap()),
            task_type: Some(TaskType(Ident::parse("echo").unwrap())),
            max_shapes: 1,
            ..QueueQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        acme.waiting, 5,
        "acme's echo tasks: 3 gpu, 1 plain, 1 given back: {acme:?}"
    );
    assert_eq!(acme.shapes.len(), 1);
    assert_eq!(acme.shapes[0].count, 3);
    let none = store
        .queue_shapes(&QueueQuery {
            within: Some(Scope::parse_path("initech").unwrap()),
            max_shapes: 10,
            ..QueueQuery::default()
        })
        .await
        .unwrap();
    assert_eq!((none.waiting, none.shapes.len()), (0, 0));

    // Assigned and running tasks, per scope: the one still assigned in acme.
    let active = store.active_by_scope().await.unwrap();
    assert_eq!(active, vec![(Scope::parse_path("acme").unwrap(), 1)]);
}
