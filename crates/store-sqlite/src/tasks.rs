//! Tasks: submission (idempotent), listing, the queue, the atomic claim, fenced
//! transitions, progress, attempts, capability results and the selection log.
//!
//! Every read-then-write here runs in one `BEGIN IMMEDIATE` transaction on the single
//! writer connection, so the checks it makes (the task is queued, the instance has a free
//! slot, the attempt is current) still hold when it writes.

use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};
use switchboard_domain::{
    Attempt, CapabilityResult, Ident, InstanceId, NewTask, SelectionLogEntry, Task, TaskAttempt, TaskEvent, TaskId,
};
use switchboard_store::{Claim, Conflict, Inserted, Page, StoreError, StoreResult, TaskQuery, Transition};

use crate::error::{is_foreign_key_violation, is_unique_violation};
use crate::rows::{self, ATTEMPT_COLUMNS, TASK_COLUMNS, ms, scope_values, to_json};
use crate::{Db, exists, map_err};

fn duration_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) async fn insert_task(db: &Db, task: &NewTask) -> StoreResult<Inserted> {
    let (account, org, project, path) = scope_values(&task.scope);
    let (key, fingerprint) = match &task.idempotency {
        Some(i) => (Some(i.key.as_str()), Some(i.fingerprint.as_str())),
        None => (None, None),
    };
    let mut tx = db.write().await?;
    // DO NOTHING on a reused idempotency key (never on another conflict: a reused id is a
    // bug and fails), then read the task that holds the key. Keys are NULL without
    // idempotency, and NULLs never conflict.
    let inserted = sqlx::query(&format!(
        "INSERT INTO tasks (id, account, org, project, scope_path, task_type, payload, selectors, connector_id, \
         capabilities, priority, assign_timeout_ms, execution_timeout_ms, max_attempts, wait_for_delegate, \
         idempotency_key, idempotency_fingerprint, state, attempt, runs, created_at, updated_at, \
         assign_deadline) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', 0, 0, ?, ?, ?) \
         ON CONFLICT (account, idempotency_key) DO NOTHING RETURNING {TASK_COLUMNS}"
    ))
    .bind(task.id.0)
    .bind(&account)
    .bind(org)
    .bind(project)
    .bind(path)
    .bind(task.task_type.as_str())
    .bind(to_json(&task.payload)?)
    .bind(to_json(&task.selectors)?)
    .bind(task.connector_id.map(|c| c.0))
    .bind(to_json(&task.capabilities)?)
    .bind(task.priority)
    .bind(duration_ms(task.assign_timeout))
    .bind(duration_ms(task.execution_timeout))
    .bind(i64::from(task.max_attempts))
    .bind(task.wait_for_delegate)
    .bind(key)
    .bind(fingerprint)
    .bind(ms(task.created_at))
    .bind(ms(task.created_at))
    // The same sum as `Task::assign_deadline`, on the stored (millisecond) values.
    .bind(ms(task.created_at).saturating_add(duration_ms(task.assign_timeout)))
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| {
        if is_foreign_key_violation(&e) {
            StoreError::NotFound("connector")
        } else if is_unique_violation(&e) {
            Conflict::Duplicate {
                what: "task",
                name: task.id.to_string(),
            }
            .into()
        } else {
            map_err(e)
        }
    })?;

    let outcome = match (inserted, &task.idempotency) {
        (Some(row), _) => Inserted::Created(rows::task(&row)?),
        (None, Some(idem)) => {
            let row = sqlx::query(&format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE account = ? AND idempotency_key = ?"
            ))
            .bind(&account)
            .bind(&idem.key)
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
            let existing = rows::task(&row)?;
            match &existing.spec.idempotency {
                Some(stored) if stored.fingerprint == idem.fingerprint => Inserted::Existing(existing),
                _ => return Err(Conflict::IdempotencyMismatch(idem.key.clone()).into()),
            }
        }
        (None, None) => {
            return Err(StoreError::Internal(
                "task insert ignored without an idempotency key".into(),
            ));
        }
    };
    tx.commit().await.map_err(map_err)?;
    Ok(outcome)
}

async fn load_task(conn: &mut SqliteConnection, id: TaskId) -> StoreResult<Task> {
    let row = sqlx::query(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?"))
        .bind(id.0)
        .fetch_optional(conn)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound("task"))?;
    rows::task(&row)
}

pub(crate) async fn get_task(db: &Db, id: TaskId) -> StoreResult<Task> {
    let mut conn = db.reader.acquire().await.map_err(map_err)?;
    load_task(&mut conn, id).await
}

pub(crate) async fn list_tasks(db: &Db, query: &TaskQuery) -> StoreResult<Page<Task>> {
    let limit = query.effective_limit();
    let mut q = QueryBuilder::<Sqlite>::new(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE 1 = 1"));
    rows::push_within(&mut q, query.within.as_ref());
    if !query.states.is_empty() {
        q.push(" AND state IN (");
        let mut states = q.separated(", ");
        for s in &query.states {
            states.push_bind(s.as_str());
        }
        q.push(")");
    }
    if let Some(t) = &query.task_type {
        q.push(" AND task_type = ").push_bind(t.as_str().to_owned());
    }
    if let Some(c) = query.connector {
        q.push(" AND connector_id = ").push_bind(c.0);
    }
    if let Some(before) = query.before {
        // UUIDv7 bytes sort in creation order, and BLOBs compare bytewise (memcmp).
        q.push(" AND id < ").push_bind(before.0);
    }
    q.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(limit));
    let found = q.build().fetch_all(&db.reader).await.map_err(map_err)?;
    let items = found.iter().map(rows::task).collect::<StoreResult<Vec<_>>>()?;
    let next = if items.len() == limit as usize {
        items.last().map(Task::id)
    } else {
        None
    };
    Ok(Page { items, next })
}

pub(crate) async fn queued_tasks(db: &Db, account: Option<&Ident>, limit: u32) -> StoreResult<Vec<Task>> {
    // The literal `state = 'queued'` (not a parameter) lets SQLite use the partial index.
    let mut q = QueryBuilder::<Sqlite>::new(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE state = 'queued'"));
    if let Some(account) = account {
        q.push(" AND account = ").push_bind(account.to_string());
    }
    q.push(" ORDER BY priority DESC, created_at ASC, id ASC LIMIT ")
        .push_bind(i64::from(limit));
    let found = q.build().fetch_all(&db.reader).await.map_err(map_err)?;
    found.iter().map(rows::task).collect()
}

pub(crate) async fn claim_task(db: &Db, task: TaskId, instance: InstanceId, at: DateTime<Utc>) -> StoreResult<Claim> {
    let mut tx = db.write().await?;
    // The task first, as the PostgreSQL store does: a task that is no longer queued is
    // `TaskNotQueued` whatever became of the instance. Any early return drops the
    // transaction, which rolls back what it wrote.
    let claimed = sqlx::query(&format!(
        "UPDATE tasks SET state = 'assigned', attempt = attempt + 1, instance_id = ?, assigned_at = ?, \
         updated_at = ? WHERE id = ? AND state = 'queued' RETURNING {TASK_COLUMNS}"
    ))
    .bind(instance.0)
    .bind(ms(at))
    .bind(ms(at))
    .bind(task.0)
    .fetch_optional(&mut *tx)
    .await
    .map_err(map_err)?;
    let Some(row) = claimed else {
        return Ok(Claim::TaskNotQueued);
    };
    let claimed = rows::task(&row)?;
    let slot = sqlx::query(
        "UPDATE delegate_instances SET active_tasks = active_tasks + 1 WHERE id = ? AND active_tasks < capacity",
    )
    .bind(instance.0)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    if slot.rows_affected() == 0 {
        let gone = !exists(&mut tx, "delegate_instances", instance.0).await?;
        return Ok(if gone { Claim::InstanceGone } else { Claim::InstanceFull });
    }
    sqlx::query("INSERT INTO task_attempts (task_id, attempt, instance_id, assigned_at) VALUES (?, ?, ?, ?)")
        .bind(task.0)
        .bind(i64::from(claimed.attempt.0))
        .bind(instance.0)
        .bind(ms(at))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    tx.commit().await.map_err(map_err)?;
    Ok(Claim::Claimed(Box::new(claimed)))
}

pub(crate) async fn transition_task(db: &Db, t: &Transition) -> StoreResult<Task> {
    let mut tx = db.write().await?;
    let mut task = load_task(&mut tx, t.task_id).await?;
    t.check_fences(&task)?;
    let from = task.state;
    // The pure half (the state machine, which fields change) is the domain's, so this
    // backend cannot disagree with the others; it refuses `Assign` too.
    let freed = task
        .apply(t.event, t.at, t.failure.clone(), t.result.clone())
        .map_err(Conflict::Transition)?;
    let to = task.state;
    let row = sqlx::query(&format!(
        "UPDATE tasks SET state = ?, runs = ?, instance_id = ?, failure_reason = ?, failure_detail = ?, \
         result = ?, updated_at = ?, started_at = ?, finished_at = ?, run_deadline = ? WHERE id = ? \
         RETURNING {TASK_COLUMNS}"
    ))
    .bind(to.as_str())
    .bind(i64::from(task.runs))
    .bind(task.instance_id.map(|i| i.0))
    .bind(task.failure.as_ref().map(|f| f.reason.as_str()))
    .bind(task.failure.as_ref().map(|f| f.detail.as_str()))
    .bind(task.result.as_ref().map(to_json).transpose()?)
    .bind(ms(task.updated_at))
    .bind(task.started_at.map(ms))
    .bind(task.finished_at.map(ms))
    .bind(task.run_deadline.map(ms))
    .bind(task.id().0)
    .fetch_one(&mut *tx)
    .await
    .map_err(map_err)?;
    let updated = rows::task(&row)?;
    if let Some(instance) = freed {
        // The instance may have been removed meanwhile: then there is no slot to free.
        sqlx::query("UPDATE delegate_instances SET active_tasks = active_tasks - 1 WHERE id = ? AND active_tasks > 0")
            .bind(instance.0)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
    }
    let attempt = i64::from(task.attempt.0);
    if t.event == TaskEvent::Acquire {
        sqlx::query("UPDATE task_attempts SET acquired_at = ? WHERE task_id = ? AND attempt = ?")
            .bind(ms(t.at))
            .bind(task.id().0)
            .bind(attempt)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
    }
    if from.holds_instance() && !to.holds_instance() {
        sqlx::query("UPDATE task_attempts SET ended_at = ?, outcome = ? WHERE task_id = ? AND attempt = ?")
            .bind(ms(t.at))
            .bind(to.as_str())
            .bind(task.id().0)
            .bind(attempt)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
    }
    tx.commit().await.map_err(map_err)?;
    Ok(updated)
}

pub(crate) async fn record_progress(
    db: &Db,
    task: TaskId,
    attempt: Attempt,
    progress: &serde_json::Value,
    at: DateTime<Utc>,
) -> StoreResult<Task> {
    let mut tx = db.write().await?;
    let updated = sqlx::query(&format!(
        "UPDATE tasks SET progress = ?, updated_at = ? WHERE id = ? AND attempt = ? AND state = 'running' \
         RETURNING {TASK_COLUMNS}"
    ))
    .bind(to_json(progress)?)
    .bind(ms(at))
    .bind(task.0)
    .bind(i64::from(attempt.0))
    .fetch_optional(&mut *tx)
    .await
    .map_err(map_err)?;
    let Some(row) = updated else {
        // Refused: say why, from the same snapshot. A stale attempt wins over the state,
        // since the reporter's view of the task is what is out of date.
        let current = load_task(&mut tx, task).await?;
        if current.attempt != attempt {
            return Err(Conflict::StaleAttempt {
                presented: attempt,
                current: current.attempt,
            }
            .into());
        }
        return Err(Conflict::TaskState(current.state).into());
    };
    let task = rows::task(&row)?;
    tx.commit().await.map_err(map_err)?;
    Ok(task)
}

pub(crate) async fn task_attempts(db: &Db, task: TaskId) -> StoreResult<Vec<TaskAttempt>> {
    let found = sqlx::query(&format!(
        "SELECT {ATTEMPT_COLUMNS} FROM task_attempts WHERE task_id = ? ORDER BY attempt"
    ))
    .bind(task.0)
    .fetch_all(&db.reader)
    .await
    .map_err(map_err)?;
    found.iter().map(rows::attempt).collect()
}

// --- capability results --------------------------------------------------------------

pub(crate) async fn record_capability_result(db: &Db, result: &CapabilityResult) -> StoreResult<()> {
    // An answer that arrives late (checked before the stored one) changes nothing: the
    // newest check is what the engine must see.
    sqlx::query(
        "INSERT INTO capability_results (instance_id, basis, reachable, detail, checked_at) VALUES (?, ?, ?, ?, ?) \
         ON CONFLICT (instance_id, basis) DO UPDATE SET \
         reachable = excluded.reachable, detail = excluded.detail, checked_at = excluded.checked_at \
         WHERE excluded.checked_at >= capability_results.checked_at",
    )
    .bind(result.instance_id.0)
    .bind(&result.basis.0)
    .bind(result.reachable)
    .bind(&result.detail)
    .bind(ms(result.checked_at))
    .execute(&db.writer)
    .await
    .map_err(|e| {
        if is_foreign_key_violation(&e) {
            StoreError::NotFound("delegate instance")
        } else {
            map_err(e)
        }
    })?;
    Ok(())
}

pub(crate) async fn capability_results(db: &Db, instances: &[InstanceId]) -> StoreResult<Vec<CapabilityResult>> {
    if instances.is_empty() {
        return Ok(Vec::new());
    }
    // One bound JSON array of hex ids rather than one parameter per instance.
    let ids: Vec<String> = instances.iter().map(|id| id.0.simple().to_string()).collect();
    let found = sqlx::query(
        "SELECT instance_id, basis, reachable, detail, checked_at FROM capability_results \
         WHERE instance_id IN (SELECT unhex(value) FROM json_each(?)) ORDER BY instance_id, basis",
    )
    .bind(to_json(&ids)?)
    .fetch_all(&db.reader)
    .await
    .map_err(map_err)?;
    found.iter().map(rows::capability_result).collect()
}

// --- selection log -----------------------------------------------------------------------

pub(crate) async fn append_selection_log(db: &Db, entries: &[SelectionLogEntry]) -> StoreResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    // One transaction, so a batch is appended whole or not at all, with one commit (one
    // sync) for all of it.
    let mut tx = db.write().await?;
    for entry in entries {
        sqlx::query(
            "INSERT INTO selection_log (task_id, attempt, at, kind, summary, detail) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(entry.task_id.0)
        .bind(i64::from(entry.attempt.0))
        .bind(ms(entry.at))
        .bind(entry.kind.as_str())
        .bind(&entry.summary)
        .bind(to_json(&entry.detail)?)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if is_foreign_key_violation(&e) {
                StoreError::NotFound("task")
            } else {
                map_err(e)
            }
        })?;
    }
    tx.commit().await.map_err(map_err)
}

pub(crate) async fn selection_log(db: &Db, task: TaskId) -> StoreResult<Vec<SelectionLogEntry>> {
    // Oldest first: ids grow with every insert (AUTOINCREMENT never reuses one).
    let found = sqlx::query(
        "SELECT task_id, attempt, at, kind, summary, detail FROM selection_log WHERE task_id = ? ORDER BY id",
    )
    .bind(task.0)
    .fetch_all(&db.reader)
    .await
    .map_err(map_err)?;
    found.iter().map(rows::selection_entry).collect()
}

pub(crate) async fn prune_selection_log(db: &Db, before: DateTime<Utc>) -> StoreResult<u64> {
    let done = sqlx::query("DELETE FROM selection_log WHERE at < ?")
        .bind(ms(before))
        .execute(&db.writer)
        .await
        .map_err(map_err)?;
    Ok(done.rows_affected())
}
