//! Conformance cases for batches of task writes ([`Store::write_tasks`],
//! [`Store::submit_task`]): refused items are refused alone, a submission is one write
//! with its claim, log and audit row, and a caller that stops waiting changes nothing.

use std::sync::Arc;

use futures::FutureExt;
use switchboard_domain::{
    Attempt, AuditEntry, ConnectorId, Idempotency, InstanceId, SelectionKind, SelectionLogEntry, TaskEvent, TaskId,
    TaskState,
};

use super::fixtures::{fleet, now, queued, task};
use crate::batch::{ClaimWrite, Submission, TaskWrite, Written};
use crate::{AuditQuery, Claim, Conflict, Inserted, Store, StoreError, Stored, Transition};

fn log(task: TaskId, attempt: u32, summary: &str) -> SelectionLogEntry {
    SelectionLogEntry {
        task_id: task,
        attempt: Attempt(attempt),
        at: now(),
        kind: SelectionKind::Decision,
        summary: summary.to_owned(),
        detail: serde_json::json!({"n": attempt}),
    }
}

fn audit(path: &str) -> AuditEntry {
    AuditEntry {
        id: 0,
        at: now(),
        actor: "admin key".into(),
        key_id: None,
        key_scope: None,
        method: "POST".into(),
        route: "/api/v1/tasks".into(),
        path: path.into(),
        status: 0,
        remote: None,
    }
}

fn submission(t: switchboard_domain::NewTask, claim: Option<InstanceId>) -> Submission {
    let id = t.id;
    Submission {
        task: t,
        claim,
        log: vec![log(id, 1, "decided")],
        log_if_claimed: vec![log(id, 1, "assigned")],
        audit: Some(audit(&format!("/api/v1/tasks#{id}"))),
    }
}

fn claim(task: TaskId, instance: InstanceId) -> TaskWrite {
    TaskWrite::Claim(ClaimWrite {
        task,
        instance,
        at: now(),
        after: None,
        log_if_claimed: vec![log(task, 1, "claimed")],
    })
}

async fn summaries(store: &Arc<dyn Store>, task: TaskId) -> Vec<String> {
    store
        .selection_log(task)
        .await
        .expect("log")
        .into_iter()
        .map(|e| e.summary)
        .collect()
}

/// One batch mixing writes that hold with writes that are refused: each refusal is its
/// own outcome, changes nothing, and the rest of the batch commits.
pub async fn a_batch_commits_its_accepted_items_and_refuses_the_others_alone(store: Arc<dyn Store>) {
    let (_, instances) = fleet(&store, "acme", "k8s", 2, 1).await;
    let (free, full) = (instances[0].id, instances[1].id);
    let filler = queued(&store, task("acme")).await;
    assert!(matches!(
        store.claim_task(filler.id(), full, now()).await.expect("claim"),
        Claim::Claimed(_)
    ));
    let to_claim = queued(&store, task("acme")).await;
    let to_refuse = queued(&store, task("acme")).await;
    let keyed = {
        let mut t = task("acme");
        t.idempotency = Some(Idempotency {
            key: "k-1".into(),
            fingerprint: "body-1".into(),
        });
        t
    };
    store.insert_task(&keyed).await.expect("keyed task");
    let mut mismatch = task("acme");
    mismatch.idempotency = Some(Idempotency {
        key: "k-1".into(),
        fingerprint: "body-2".into(),
    });
    let mut no_connector = task("acme");
    no_connector.connector_id = Some(ConnectorId(uuid::Uuid::new_v4()));
    let fresh = task("acme");
    let fresh_id = fresh.id;

    let writes = vec![
        TaskWrite::Submit(Box::new(submission(fresh, None))),
        TaskWrite::Submit(Box::new(submission(mismatch, None))),
        TaskWrite::Submit(Box::new(submission(no_connector.clone(), None))),
        claim(to_refuse.id(), full),
        claim(to_claim.id(), free),
        // Stale: the filler is at attempt 1.
        TaskWrite::Transition(Box::new(Transition::new(
            filler.id(),
            Some(Attempt(7)),
            TaskEvent::Acquire,
            now(),
        ))),
        // Not the holder.
        TaskWrite::Transition(Box::new(
            Transition::new(filler.id(), Some(Attempt(1)), TaskEvent::Acquire, now()).held_by(free),
        )),
        TaskWrite::Log(vec![log(TaskId::new(), 1, "for nobody")]),
        TaskWrite::Log(vec![log(to_refuse.id(), 0, "kept")]),
        TaskWrite::Audit(Box::new(AuditEntry {
            status: 204,
            ..audit("/kept")
        })),
        // Not an HTTP status: the schema would refuse the row, so the item is refused.
        TaskWrite::Audit(Box::new(audit("/refused"))),
    ];
    let outcomes = store.write_tasks(writes).await.expect("the batch commits");
    assert_eq!(outcomes.len(), 11, "one outcome per item");
    assert!(matches!(
        &outcomes[0],
        Ok(Written::Submitted { inserted: Inserted::Created(t), claim: None, .. }) if t.id() == fresh_id
    ));
    assert!(matches!(
        &outcomes[1],
        Err(StoreError::Conflict(Conflict::IdempotencyMismatch(k))) if k == "k-1"
    ));
    assert!(matches!(&outcomes[2], Err(StoreError::NotFound("connector"))));
    assert!(matches!(&outcomes[3], Ok(Written::Claim(Claim::InstanceFull))));
    assert!(matches!(&outcomes[4], Ok(Written::Claim(Claim::Claimed(t))) if t.instance_id == Some(free)));
    assert!(matches!(
        &outcomes[5],
        Err(StoreError::Conflict(Conflict::StaleAttempt { .. }))
    ));
    assert!(matches!(
        &outcomes[6],
        Err(StoreError::Conflict(Conflict::NotHolder { .. }))
    ));
    assert!(matches!(&outcomes[7], Err(StoreError::NotFound("task"))));
    assert!(matches!(&outcomes[8], Ok(Written::Logged)));
    let Ok(Written::Audited(kept)) = &outcomes[9] else {
        panic!("the audit row is answered with its id: {:?}", outcomes[9]);
    };
    assert!(matches!(&outcomes[10], Err(StoreError::Internal(_))));

    // What held is stored...
    assert_eq!(store.get_task(fresh_id).await.expect("fresh").state, TaskState::Queued);
    assert_eq!(summaries(&store, fresh_id).await, vec!["decided"]);
    let claimed = store.get_task(to_claim.id()).await.expect("claimed");
    assert_eq!(
        (claimed.state, claimed.attempt, claimed.instance_id),
        (TaskState::Assigned, Attempt(1), Some(free))
    );
    assert_eq!(summaries(&store, to_claim.id()).await, vec!["claimed"]);
    assert_eq!(store.task_attempts(to_claim.id()).await.expect("attempts").len(), 1);
    assert_eq!(store.get_instance(free).await.expect("free").active_tasks, 1);
    assert_eq!(summaries(&store, to_refuse.id()).await, vec!["kept"]);
    let audited = store
        .list_audit(&AuditQuery {
            limit: 100,
            ..AuditQuery::default()
        })
        .await
        .expect("audit");
    assert!(audited.iter().any(|e| e.id == kept.id && e.path == "/kept"));
    assert!(
        audited
            .iter()
            .any(|e| e.path == format!("/api/v1/tasks#{fresh_id}") && e.status == 201),
        "the submission's audit row, with the status of a created task: {audited:?}"
    );
    // ...and what was refused changed nothing.
    assert_eq!(
        store.get_task(to_refuse.id()).await.expect("refused").state,
        TaskState::Queued
    );
    assert_eq!(store.get_instance(full).await.expect("full").active_tasks, 1);
    let filler = store.get_task(filler.id()).await.expect("filler");
    assert_eq!((filler.state, filler.attempt), (TaskState::Assigned, Attempt(1)));
    assert!(matches!(
        store.get_task(no_connector.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(audited.len(), 2, "no audit row for a refused submission: {audited:?}");
}

/// A submission stored with its claim, its log entries and its audit row in one write;
/// a replay answers the stored task and claims nothing; a claim on a full instance leaves
/// the new task queued, without the claim's entries.
pub async fn a_submission_is_stored_claimed_with_its_log_and_audit_in_one_write(store: Arc<dyn Store>) {
    let (_, instances) = fleet(&store, "acme", "k8s", 1, 1).await;
    let i = instances[0].id;
    let mut t = task("acme");
    t.idempotency = Some(Idempotency {
        key: "sub-1".into(),
        fingerprint: "body".into(),
    });
    let id = t.id;

    let Stored { inserted, claim, .. } = store
        .submit_task(submission(t.clone(), Some(i)))
        .await
        .expect("submitted");
    let Inserted::Created(created) = inserted else {
        panic!("a new task is created: {inserted:?}");
    };
    assert_eq!(
        (created.state, created.attempt, created.instance_id),
        (TaskState::Assigned, Attempt(1), Some(i))
    );
    assert!(matches!(claim, Some(Claim::Claimed(_))));
    let stored = store.get_task(id).await.expect("stored");
    assert_eq!(stored, created, "the answer is the stored row");
    assert_eq!(summaries(&store, id).await, vec!["decided", "assigned"]);
    let attempts = store.task_attempts(id).await.expect("attempts");
    assert_eq!((attempts.len(), attempts[0].instance_id), (1, i));
    assert_eq!(store.get_instance(i).await.expect("instance").active_tasks, 1);

    // The same request again: the task as stored, nothing claimed, audited as a replay.
    let Stored {
        inserted: again, claim, ..
    } = store.submit_task(submission(t, Some(i))).await.expect("replayed");
    assert!(matches!(&again, Inserted::Existing(e) if e.id() == id && e.state == TaskState::Assigned));
    assert_eq!(claim, None);
    assert_eq!(summaries(&store, id).await.len(), 2, "a replay logs nothing");
    let statuses: Vec<u16> = store
        .list_audit(&AuditQuery {
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .expect("audit")
        .into_iter()
        .map(|e| e.status)
        .collect();
    assert_eq!(statuses, vec![200, 201], "newest first: the replay, then the creation");

    // The instance is full now: the next task is stored queued, without the claim's entries.
    let next = task("acme");
    let next_id = next.id;
    let Stored { inserted, claim, .. } = store.submit_task(submission(next, Some(i))).await.expect("submitted");
    assert!(matches!(&inserted, Inserted::Created(t) if t.state == TaskState::Queued));
    assert_eq!(claim, Some(Claim::InstanceFull));
    assert_eq!(store.get_task(next_id).await.expect("stored").state, TaskState::Queued);
    assert_eq!(summaries(&store, next_id).await, vec!["decided"]);
    assert_eq!(store.get_instance(i).await.expect("instance").active_tasks, 1);
}

/// A caller that stops waiting once its writes are handed over (its request timed out)
/// changes nothing about them: they commit whole with their batch, and the idempotent
/// retry finds the task, claimed, with every row that went with it.
pub async fn a_caller_that_stops_waiting_leaves_its_writes_whole(store: Arc<dyn Store>) {
    let (_, instances) = fleet(&store, "acme", "k8s", 1, 4).await;
    let i = instances[0].id;
    let mut t = task("acme");
    t.idempotency = Some(Idempotency {
        key: "dropped".into(),
        fingerprint: "body".into(),
    });
    let id = t.id;
    // Polled once (the writes are queued, or already being written), then dropped.
    let dropped = store.submit_task(submission(t.clone(), Some(i))).now_or_never();
    if let Some(answer) = dropped {
        answer.expect("a write answered at once is a success");
    }
    // The retry goes through the committer behind the dropped writes, so it sees them.
    let Stored { inserted, claim, .. } = store.submit_task(submission(t, Some(i))).await.expect("retried");
    match inserted {
        Inserted::Existing(task) => {
            assert_eq!(claim, None);
            assert_eq!((task.state, task.instance_id), (TaskState::Assigned, Some(i)));
        }
        // The dropped future had not handed its writes over yet: the retry is the first.
        Inserted::Created(task) => assert_eq!(task.state, TaskState::Assigned),
    }
    assert_eq!(summaries(&store, id).await, vec!["decided", "assigned"], "whole, once");
    assert_eq!(store.task_attempts(id).await.expect("attempts").len(), 1);
    assert_eq!(store.get_instance(i).await.expect("instance").active_tasks, 1);
}
