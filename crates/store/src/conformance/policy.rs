//! Queue policy in the store: concurrency keys enforced by the claim, the `cancel_older`
//! strategy, and retries recorded on the attempts (docs/rules.md, "Concurrency keys",
//! "Retries").

use std::sync::Arc;

use switchboard_domain::policy::{Backoff, Concurrency, ConcurrencyStrategy, Ending, RetryPolicy};
use switchboard_domain::{Attempt, Failure, FailureReason, NewTask, SelectionKind, TaskEvent, TaskState};

use super::fixtures::{fleet, now, queued, task};
use crate::batch::Submission;
use crate::{Claim, Inserted, Store, Stored, Transition};

fn keyed(scope: &str, key: &str, limit: u32, strategy: ConcurrencyStrategy) -> NewTask {
    NewTask {
        concurrency: Some(Concurrency::new(key.into(), limit, strategy).unwrap()),
        ..task(scope)
    }
}

/// At most `limit` tasks of a key hold an instance at once in an account, whichever
/// instances they go to; an ending frees the key's slot; another key, or the same key in
/// another account, is not held back; a submission's claim is refused alike.
pub async fn a_concurrency_key_limits_claims_in_its_account_until_one_ends(store: Arc<dyn Store>) {
    let (_, acme) = fleet(&store, "acme", "k8s", 3, 4).await;
    let (_, other) = fleet(&store, "globex", "k8s", 1, 4).await;
    let deploy = |limit| keyed("acme", "deploy-prod", limit, ConcurrencyStrategy::KeepAll);
    let first = queued(&store, deploy(1)).await;
    let second = queued(&store, deploy(1)).await;
    assert!(matches!(
        store.claim_task(first.id(), acme[0].id, now()).await.unwrap(),
        Claim::Claimed(_)
    ));
    assert_eq!(
        store.claim_task(second.id(), acme[1].id, now()).await.unwrap(),
        Claim::Limited {
            key: "deploy-prod".into(),
            running: 1,
            limit: 1
        },
        "another instance with free slots changes nothing: the key is at its limit"
    );
    assert_eq!(store.get_task(second.id()).await.unwrap().state, TaskState::Queued);
    assert_eq!(store.get_instance(acme[1].id).await.unwrap().active_tasks, 0);
    let acme_id = first.spec.scope.account_id().clone();
    assert_eq!(store.concurrency_held(&acme_id, "deploy-prod").await.unwrap(), 1);

    // Another key, and the same key in another account, are not held back.
    let other_key = queued(&store, keyed("acme", "deploy-staging", 1, ConcurrencyStrategy::KeepAll)).await;
    assert!(matches!(
        store.claim_task(other_key.id(), acme[1].id, now()).await.unwrap(),
        Claim::Claimed(_)
    ));
    let elsewhere = queued(&store, keyed("globex", "deploy-prod", 1, ConcurrencyStrategy::KeepAll)).await;
    assert!(matches!(
        store.claim_task(elsewhere.id(), other[0].id, now()).await.unwrap(),
        Claim::Claimed(_)
    ));

    // A submission claimed at once is stored queued when its key is at its limit.
    let submitted = store
        .submit_task(Submission {
            task: deploy(1),
            claim: Some(acme[2].id),
            log: Vec::new(),
            log_if_claimed: Vec::new(),
            audit: None,
        })
        .await
        .unwrap();
    let Stored {
        inserted: Inserted::Created(third),
        claim: Some(Claim::Limited {
            running: 1, limit: 1, ..
        }),
        ..
    } = submitted
    else {
        panic!("a submission at the key's limit is stored queued: {submitted:?}");
    };
    assert_eq!(third.state, TaskState::Queued);

    // The running one ends: the key has room for the next.
    let at = now();
    store
        .transition_task(&Transition::new(first.id(), Some(Attempt(1)), TaskEvent::Acquire, at))
        .await
        .unwrap();
    store
        .transition_task(&Transition::new(first.id(), Some(Attempt(1)), TaskEvent::Succeed, at))
        .await
        .unwrap();
    assert_eq!(store.concurrency_held(&acme_id, "deploy-prod").await.unwrap(), 0);
    assert!(matches!(
        store.claim_task(second.id(), acme[1].id, now()).await.unwrap(),
        Claim::Claimed(_)
    ));
    assert!(matches!(
        store.claim_task(third.id(), acme[2].id, now()).await.unwrap(),
        Claim::Limited { .. }
    ));

    // A limit of 2 lets two hold instances (the claiming task's own limit counts).
    let roomy = queued(&store, deploy(2)).await;
    assert!(matches!(
        store.claim_task(roomy.id(), acme[2].id, now()).await.unwrap(),
        Claim::Claimed(_)
    ));
    assert_eq!(store.concurrency_held(&acme_id, "deploy-prod").await.unwrap(), 2);
}

/// Many claims of one key's tasks at once, over every instance: exactly `limit` win.
pub async fn claims_of_one_key_are_exact_under_concurrency(store: Arc<dyn Store>) {
    const TASKS: usize = 24;
    const LIMIT: u32 = 3;
    let (_, instances) = fleet(&store, "acme", "k8s", 4, 8).await;
    let mut ids = Vec::with_capacity(TASKS);
    for _ in 0..TASKS {
        ids.push(
            queued(&store, keyed("acme", "migrate", LIMIT, ConcurrencyStrategy::KeepAll))
                .await
                .id(),
        );
    }
    let claims = ids.iter().enumerate().map(|(n, &t)| {
        let (store, instance) = (store.clone(), instances[n % instances.len()].id);
        tokio::spawn(async move { store.claim_task(t, instance, now()).await.unwrap() })
    });
    let mut claimed = 0;
    for claim in futures::future::join_all(claims).await {
        match claim.unwrap() {
            Claim::Claimed(_) => claimed += 1,
            Claim::Limited { key, limit, .. } => assert_eq!((key.as_str(), limit), ("migrate", LIMIT)),
            other => panic!("every instance has room, so only the key refuses: {other:?}"),
        }
    }
    assert_eq!(claimed, LIMIT, "exactly the key's limit is claimed");
    let account = switchboard_domain::Ident::parse("acme").unwrap();
    assert_eq!(store.concurrency_held(&account, "migrate").await.unwrap(), LIMIT);
}

/// A submission with `cancel_older` cancels the key's queued tasks in its own commit, and
/// logs why on each; assigned ones, other keys and `keep_all` submissions are left alone.
pub async fn cancel_older_cancels_the_keys_waiting_tasks_in_the_submissions_commit(store: Arc<dyn Store>) {
    let (_, instances) = fleet(&store, "acme", "k8s", 1, 4).await;
    let key = |strategy| keyed("acme", "deploy-prod", 1, strategy);
    let running = queued(&store, key(ConcurrencyStrategy::KeepAll)).await;
    assert!(matches!(
        store.claim_task(running.id(), instances[0].id, now()).await.unwrap(),
        Claim::Claimed(_)
    ));
    let waiting = queued(&store, key(ConcurrencyStrategy::KeepAll)).await;
    let unrelated = queued(&store, keyed("acme", "deploy-staging", 1, ConcurrencyStrategy::KeepAll)).await;
    let kept = store.insert_task(&key(ConcurrencyStrategy::KeepAll)).await.unwrap();
    assert_eq!(store.get_task(waiting.id()).await.unwrap().state, TaskState::Queued);

    let newest = key(ConcurrencyStrategy::CancelOlder);
    let newest_id = newest.id;
    let stored = store
        .submit_task(Submission {
            task: newest,
            claim: None,
            log: Vec::new(),
            log_if_claimed: Vec::new(),
            audit: None,
        })
        .await
        .unwrap();
    let mut superseded = stored.superseded.clone();
    superseded.sort();
    let mut expected = vec![waiting.id(), kept.task().id()];
    expected.sort();
    assert_eq!(superseded, expected, "the key's queued tasks, and only those");
    for id in &expected {
        let t = store.get_task(*id).await.unwrap();
        assert_eq!(t.state, TaskState::Cancelled);
        let log = store.selection_log(*id).await.unwrap();
        let last = log.last().expect("a log entry");
        assert_eq!(last.kind, SelectionKind::Ended);
        assert!(
            last.summary.contains(&format!(
                "superseded by task {newest_id} of concurrency key deploy-prod"
            )),
            "{}",
            last.summary
        );
    }
    assert_eq!(store.get_task(running.id()).await.unwrap().state, TaskState::Assigned);
    assert_eq!(store.get_task(unrelated.id()).await.unwrap().state, TaskState::Queued);
    assert_eq!(store.get_task(newest_id).await.unwrap().state, TaskState::Queued);
}

/// A run that fails with a code its policy retries goes back to the queue as a new
/// attempt, due after the backoff, left out of the queue until then; its attempt records
/// how it ended and when the next is due. A failure marked not retryable, or with
/// another code, ends the task; so does the last run.
pub async fn a_retried_run_is_recorded_on_its_attempt_and_waits_out_its_backoff(store: Arc<dyn Store>) {
    let (_, instances) = fleet(&store, "acme", "k8s", 2, 4).await;
    let policy = RetryPolicy {
        on: [Ending::Failed, Ending::TimedOut].into_iter().collect(),
        error_codes: vec!["exit:1".into()],
        backoff: Backoff {
            initial_ms: 60_000,
            factor: 2.0,
            max_ms: 600_000,
        },
        prefer_different_instance: true,
    };
    let retried = |max_attempts| NewTask {
        max_attempts,
        retry: Some(policy.clone()),
        ..task("acme")
    };
    let run = |t: switchboard_domain::TaskId, attempt: u32, instance| {
        let store = store.clone();
        async move {
            assert!(matches!(
                store.claim_task(t, instance, now()).await.unwrap(),
                Claim::Claimed(_)
            ));
            store
                .transition_task(&Transition::new(t, Some(Attempt(attempt)), TaskEvent::Acquire, now()))
                .await
                .unwrap();
        }
    };
    let fail = |t, attempt, code: &str, retryable: bool| {
        let mut f = Transition::new(t, Some(Attempt(attempt)), TaskEvent::Fail, now());
        f.failure = Some(Failure {
            code: Some(code.into()),
            retryable,
            ..Failure::new(FailureReason::TaskError, "exit status 1")
        });
        f
    };

    let t = queued(&store, retried(3)).await.id();
    run(t, 1, instances[0].id).await;
    let failed_at = now();
    let after = store.transition_task(&fail(t, 1, "exit:1", true)).await.unwrap();
    assert_eq!(
        (after.state, after.attempt, after.runs),
        (TaskState::Queued, Attempt(1), 1)
    );
    assert_eq!(
        after.failure, None,
        "a retried failure is the attempt's, not the task's"
    );
    let due = after.retry_at.expect("a retry is due later");
    let waited = (due - failed_at).num_milliseconds();
    assert!(
        (59_000..=61_000).contains(&waited),
        "the first backoff is initial_delay: {waited} ms"
    );
    assert!(
        store.queued_tasks(None, 100).await.unwrap().iter().all(|q| q.id() != t),
        "not in the queue before it is due"
    );
    let attempts = store.task_attempts(t).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, Some(TaskState::Failed));
    assert_eq!(attempts[0].retry_at, Some(due));
    assert_eq!(
        attempts[0].failure.as_ref().and_then(|f| f.code.as_deref()),
        Some("exit:1")
    );
    let stored = store.get_task(t).await.unwrap();
    assert_eq!(stored.retry_at, Some(due), "the due time is stored");
    // The old attempt's report is refused, as a delegate's report is fenced by attempt and
    // holder: the same fencing as any re-queue.
    let stale = fail(t, 1, "exit:1", true).held_by(instances[0].id);
    assert!(store.transition_task(&stale).await.is_err());
    assert_eq!(store.get_task(t).await.unwrap().state, TaskState::Queued);

    // The second run ends with a code the policy does not name: the task fails.
    run(t, 2, instances[1].id).await;
    let ended = store.transition_task(&fail(t, 2, "exit:2", true)).await.unwrap();
    assert_eq!(ended.state, TaskState::Failed);
    assert_eq!(ended.failure.and_then(|f| f.code), Some("exit:2".into()));
    assert_eq!(ended.retry_at, None);

    // Not retryable, whatever the policy.
    let t = queued(&store, retried(3)).await.id();
    run(t, 1, instances[0].id).await;
    let ended = store.transition_task(&fail(t, 1, "exit:1", false)).await.unwrap();
    assert_eq!(ended.state, TaskState::Failed);

    // The last run is not retried.
    let t = queued(&store, retried(1)).await.id();
    run(t, 1, instances[0].id).await;
    let ended = store.transition_task(&fail(t, 1, "exit:1", true)).await.unwrap();
    assert_eq!(ended.state, TaskState::Failed);

    // A timeout the policy names is retried, due after the backoff too.
    let t = queued(&store, retried(2)).await.id();
    run(t, 1, instances[0].id).await;
    let mut timeout = Transition::new(t, Some(Attempt(1)), TaskEvent::TimeOut, now());
    timeout.failure = Some(Failure::new(FailureReason::TaskError, "ran past its execution timeout"));
    let after = store.transition_task(&timeout).await.unwrap();
    assert_eq!(after.state, TaskState::Queued);
    let attempts = store.task_attempts(t).await.unwrap();
    assert_eq!(attempts[0].outcome, Some(TaskState::TimedOut));
}

/// The fair sweep's read: share by share (account, org, project, by bytes, none first),
/// the head of each in the queue's order (the rows asked for, shared out, at least two
/// each), from a cursor, at most so many shares.
pub async fn the_queue_is_read_share_by_share_from_a_cursor(store: Arc<dyn Store>) {
    let mut red = Vec::new();
    for _ in 0..6 {
        red.push(queued(&store, task("acme/red")).await.id());
    }
    let blue = queued(&store, task("acme/blue")).await.id();
    let account = queued(&store, task("acme")).await.id();
    let other = queued(&store, task("globex/x/y")).await.id();
    let project = queued(&store, task("acme/red/web")).await.id();
    let ids = |tasks: Vec<switchboard_domain::Task>| tasks.iter().map(|t| t.id()).collect::<Vec<_>>();

    let all = ids(store.queue_heads(None, 10, 20).await.unwrap());
    let mut expected = vec![account, blue];
    expected.extend(&red[..4]);
    expected.extend([project, other]);
    assert_eq!(all, expected, "each share's head, shares in order");

    let first_two = ids(store.queue_heads(None, 2, 8).await.unwrap());
    assert_eq!(first_two, vec![account, blue]);
    let after = super::fixtures::scope("acme/blue");
    let rest = ids(store.queue_heads(Some(&after), 2, 1).await.unwrap());
    assert_eq!(
        rest,
        vec![red[0], red[1], project],
        "after the cursor, at least two each"
    );

    // Not a task taken, nor one whose retry is not yet due (a claimed one leaves).
    let (_, instances) = fleet(&store, "acme", "k8s", 1, 4).await;
    assert!(matches!(
        store.claim_task(account, instances[0].id, now()).await.unwrap(),
        Claim::Claimed(_)
    ));
    let left = ids(store.queue_heads(None, 1, 4).await.unwrap());
    assert_eq!(left, vec![blue], "the account's share is empty now");
}

/// What operators set per scope round-trips, is replaced by a new setting, is listed
/// within a scope, and removed once.
pub async fn scope_policies_round_trip_and_are_listed_within_a_scope(store: Arc<dyn Store>) {
    use switchboard_domain::policy::ScopePolicy;
    let at = now();
    let policy = |path: &str, weight, retry: Option<RetryPolicy>| ScopePolicy {
        scope: super::fixtures::scope(path),
        weight,
        retry,
        updated_at: at,
    };
    let retry = RetryPolicy {
        on: [Ending::Failed].into_iter().collect(),
        error_codes: vec!["exit:137".into()],
        backoff: Backoff {
            initial_ms: 1000,
            factor: 3.0,
            max_ms: 60_000,
        },
        prefer_different_instance: false,
    };
    store
        .set_scope_policy(&policy("acme", None, Some(retry.clone())))
        .await
        .unwrap();
    store
        .set_scope_policy(&policy("acme/red", Some(2), None))
        .await
        .unwrap();
    store
        .set_scope_policy(&policy("acme/red/web", Some(5), None))
        .await
        .unwrap();
    store.set_scope_policy(&policy("globex", Some(9), None)).await.unwrap();
    // Replaced, not added.
    store
        .set_scope_policy(&policy("acme/red", Some(3), None))
        .await
        .unwrap();

    let all = store.scope_policies(None).await.unwrap();
    let paths: Vec<String> = all.iter().map(|p| p.scope.path()).collect();
    assert_eq!(paths, vec!["acme", "acme/red", "acme/red/web", "globex"]);
    assert_eq!(all[0], policy("acme", None, Some(retry)), "every field round-trips");
    assert_eq!(all[1].weight, Some(3));
    let red = store
        .scope_policies(Some(&super::fixtures::scope("acme/red")))
        .await
        .unwrap();
    assert_eq!(
        red.iter().map(|p| p.scope.path()).collect::<Vec<_>>(),
        vec!["acme/red", "acme/red/web"]
    );

    store
        .delete_scope_policy(&super::fixtures::scope("acme/red"))
        .await
        .unwrap();
    assert!(matches!(
        store.delete_scope_policy(&super::fixtures::scope("acme/red")).await,
        Err(crate::StoreError::NotFound(_))
    ));
    assert_eq!(store.scope_policies(None).await.unwrap().len(), 3);
}
