//! Conformance cases for task logs: fenced appends, order and duplicates, the bound that
//! keeps the head and the tail, and retention.

use std::sync::Arc;

use chrono::TimeDelta;
use switchboard_domain::tasklog::{Appended, LogAppend, LogChunk, LogPosition};
use switchboard_domain::{Attempt, InstanceId, Task, TaskEvent, TaskId, TaskState};

use super::fixtures::{fleet, now, queued, task};
use crate::{Claim, Conflict, Store, StoreError, TaskWrite, Transition, Written};

/// A task running attempt 1 on an instance, and that instance.
async fn running(store: &Arc<dyn Store>, group: &str) -> (Task, InstanceId) {
    let (_, instances) = fleet(store, "acme", group, 1, 5).await;
    let t = queued(store, task("acme")).await;
    match store.claim_task(t.id(), instances[0].id, now()).await.expect("claim") {
        Claim::Claimed(_) => {}
        other => panic!("expected a claim, got {other:?}"),
    }
    let t = store
        .transition_task(&Transition::new(t.id(), Some(Attempt(1)), TaskEvent::Acquire, now()).held_by(instances[0].id))
        .await
        .expect("acquired");
    (t, instances[0].id)
}

fn append(task: TaskId, instance: InstanceId, attempt: u32, offset: u64, text: &str, max_bytes: u64) -> LogAppend {
    LogAppend {
        task,
        instance,
        at: LogPosition {
            attempt: Attempt(attempt),
            offset,
        },
        text: text.to_owned(),
        stored_at: now(),
        max_bytes,
    }
}

const BOUND: u64 = 1 << 20;

async fn text_of(store: &Arc<dyn Store>, task: TaskId) -> String {
    chunks(store, task).await.iter().map(|c| c.text.as_str()).collect()
}

async fn chunks(store: &Arc<dyn Store>, task: TaskId) -> Vec<LogChunk> {
    store
        .task_log(task, LogPosition::default(), usize::MAX)
        .await
        .expect("read")
}

pub async fn log_chunks_out_of_order_and_retried_are_kept_once_in_order(store: Arc<dyn Store>) {
    let (t, me) = running(&store, "k8s").await;
    let lines = ["one\n", "two\n", "three\n"];
    let offsets = [0u64, 4, 8];
    for i in [2usize, 0, 1] {
        let done = store
            .append_task_log(&append(t.id(), me, 1, offsets[i], lines[i], BOUND))
            .await
            .expect("stored");
        assert_eq!(done, Appended::Stored);
    }
    for i in [0usize, 2] {
        let done = store
            .append_task_log(&append(t.id(), me, 1, offsets[i], lines[i], BOUND))
            .await
            .expect("a retry answers");
        assert_eq!(done, Appended::AlreadyStored);
    }
    assert_eq!(text_of(&store, t.id()).await, "one\ntwo\nthree\n");

    // Paging: from a position, at least one chunk, about the bytes asked for.
    let page = store
        .task_log(
            t.id(),
            LogPosition {
                attempt: Attempt(1),
                offset: 4,
            },
            1,
        )
        .await
        .expect("read");
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].text, "two\n");
    assert_eq!(page[0].next().offset, 8);

    let unknown = store
        .task_log(TaskId(uuid::Uuid::new_v4()), LogPosition::default(), 100)
        .await
        .unwrap_err();
    assert!(matches!(unknown, StoreError::NotFound("task")), "{unknown:?}");
    let fresh = queued(&store, task("acme")).await;
    assert!(chunks(&store, fresh.id()).await.is_empty());
}

pub async fn log_appends_are_fenced_by_attempt_and_holder(store: Arc<dyn Store>) {
    let (t, me) = running(&store, "k8s").await;
    let stale = store
        .append_task_log(&append(t.id(), me, 2, 0, "x", BOUND))
        .await
        .unwrap_err();
    assert!(
        matches!(stale, StoreError::Conflict(Conflict::StaleAttempt { .. })),
        "{stale:?}"
    );
    let other = InstanceId(uuid::Uuid::new_v4());
    let not_mine = store
        .append_task_log(&append(t.id(), other, 1, 0, "x", BOUND))
        .await
        .unwrap_err();
    assert!(
        matches!(not_mine, StoreError::Conflict(Conflict::NotHolder { .. })),
        "{not_mine:?}"
    );
    let unknown = store
        .append_task_log(&append(TaskId(uuid::Uuid::new_v4()), me, 1, 0, "x", BOUND))
        .await
        .unwrap_err();
    assert!(matches!(unknown, StoreError::NotFound("task")), "{unknown:?}");

    // Once the attempt ended, nothing more is appended to it.
    store
        .transition_task(&Transition::new(t.id(), Some(Attempt(1)), TaskEvent::Succeed, now()).held_by(me))
        .await
        .expect("succeeded");
    let ended = store
        .append_task_log(&append(t.id(), me, 1, 0, "late", BOUND))
        .await
        .unwrap_err();
    assert!(
        matches!(
            ended,
            StoreError::Conflict(Conflict::NotHolder {
                state: TaskState::Succeeded,
                ..
            })
        ),
        "{ended:?}"
    );
    assert!(chunks(&store, t.id()).await.is_empty(), "refused appends store nothing");
}

pub async fn a_log_past_its_bound_keeps_its_head_and_its_tail_with_a_marker(store: Arc<dyn Store>) {
    let (t, me) = running(&store, "k8s").await;
    // A bound of 100 bytes: the head is what arrives in the first 50; chunks of 10.
    let bound = 100;
    let mut offset = 0u64;
    let mut sent = Vec::new();
    for i in 0..30 {
        let line = format!("line {i:03}\n "); // 10 bytes
        store
            .append_task_log(&append(t.id(), me, 1, offset, &line, bound))
            .await
            .expect("stored");
        offset += line.len() as u64;
        sent.push(line);
    }
    let kept = chunks(&store, t.id()).await;
    let markers: Vec<&LogChunk> = kept.iter().filter(|c| c.cut_bytes.is_some()).collect();
    assert_eq!(markers.len(), 1, "one marker: {kept:?}");
    let text: Vec<&str> = kept
        .iter()
        .filter(|c| c.cut_bytes.is_none())
        .map(|c| c.text.as_str())
        .collect();
    let stored: usize = text.iter().map(|t| t.len()).sum();
    assert!(stored as u64 <= bound, "{stored} bytes kept");
    // The head: the first five chunks, in order, then the marker, then the newest ones.
    let head: Vec<&str> = sent[..5].iter().map(String::as_str).collect();
    assert_eq!(&text[..5], &head[..]);
    assert_eq!(kept[5].cut_bytes, Some(200), "{kept:?}");
    let tail: Vec<&str> = sent[25..].iter().map(String::as_str).collect();
    assert_eq!(&text[5..], &tail[..]);
    assert_eq!(kept[5].at.offset, 50, "the marker stands where the cut began");
}

pub async fn task_logs_are_removed_whole_past_their_retention(store: Arc<dyn Store>) {
    let (t, me) = running(&store, "k8s").await;
    let mut old = append(t.id(), me, 1, 0, "old\n", BOUND);
    old.stored_at = now() - TimeDelta::days(40);
    store.append_task_log(&old).await.expect("stored");
    let (u, other) = running(&store, "ecs").await;
    store
        .append_task_log(&append(u.id(), other, 1, 0, "new\n", BOUND))
        .await
        .expect("stored");
    let removed = store
        .prune_task_logs(now() - TimeDelta::days(30))
        .await
        .expect("pruned");
    assert_eq!(removed, 1);
    assert!(chunks(&store, t.id()).await.is_empty());
    assert_eq!(text_of(&store, u.id()).await, "new\n");
}

pub async fn log_chunks_in_one_batch_are_fenced_by_what_the_batch_did_before_them(store: Arc<dyn Store>) {
    let (t, me) = running(&store, "k8s").await;
    let chunk = |offset: u64, text: &str| TaskWrite::AppendLog(Box::new(append(t.id(), me, 1, offset, text, BOUND)));
    let done = Transition::new(t.id(), Some(Attempt(1)), TaskEvent::Succeed, now()).held_by(me);
    let outcomes = store
        .write_tasks(vec![
            chunk(0, "one\n"),
            chunk(0, "one\n"),
            chunk(4, "two\n"),
            TaskWrite::Transition(Box::new(done)),
            chunk(8, "late\n"),
        ])
        .await
        .expect("the batch commits");
    let appended = |i: usize| match &outcomes[i] {
        Ok(Written::LogAppended(a)) => Ok(*a),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e.clone()),
    };
    assert!(matches!(appended(0), Ok(Appended::Stored)), "{:?}", outcomes[0]);
    assert!(
        matches!(appended(1), Ok(Appended::AlreadyStored)),
        "the same place twice in one batch: {:?}",
        outcomes[1]
    );
    assert!(matches!(appended(2), Ok(Appended::Stored)), "{:?}", outcomes[2]);
    assert!(
        matches!(
            appended(4),
            Err(StoreError::Conflict(Conflict::NotHolder {
                state: TaskState::Succeeded,
                ..
            }))
        ),
        "after the result in the same batch: {:?}",
        outcomes[4]
    );
    assert_eq!(text_of(&store, t.id()).await, "one\ntwo\n");
}
