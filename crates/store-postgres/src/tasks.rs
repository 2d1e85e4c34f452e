//! Tasks: the queue, the atomic claim, fenced transitions, attempts, capability results
//! and the selection log.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Transaction};
use switchboard_domain::{
    Attempt, CapabilityBasis, CapabilityResult, Ident, InstanceId, NewTask, SelectionKind, SelectionLogEntry, Task,
    TaskAttempt, TaskEvent, TaskId, TaskState,
};
use switchboard_store::{Claim, Conflict, Inserted, Page, StoreError, StoreResult, TaskQuery, Transition};
use uuid::Uuid;

use crate::error::is_unique_violation;
use crate::map_err;
use crate::rows::{self, TASK_COLUMNS, scope_values, within, within_sql};

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) async fn insert_task(pool: &PgPool, t: &NewTask) -> StoreResult<Inserted> {
    let (account, org, project, path) = scope_values(&t.scope);
    let (key, fingerprint) = match &t.idempotency {
        Some(i) => (Some(i.key.as_str()), Some(i.fingerprint.as_str())),
        None => (None, None),
    };
    let sql = format!(
        "INSERT INTO tasks (id, account, org, project, scope_path, task_type, payload, selectors, connector_id,
             capabilities, priority, assign_timeout_ms, execution_timeout_ms, max_attempts, wait_for_delegate,
             idempotency_key, idempotency_fingerprint, state, created_at, updated_at, assign_deadline)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, 'queued', $18, $18,
             $18 + $12 * interval '1 millisecond')
         ON CONFLICT (account, idempotency_key) DO NOTHING
         RETURNING {TASK_COLUMNS}"
    );
    let inserted = sqlx::query(&sql)
        .bind(t.id.0)
        .bind(&account)
        .bind(org)
        .bind(project)
        .bind(path)
        .bind(t.task_type.as_str())
        .bind(Json(&t.payload))
        .bind(Json(&t.selectors))
        .bind(t.connector_id.map(|c| c.0))
        .bind(Json(&t.capabilities))
        .bind(t.priority)
        .bind(millis(t.assign_timeout))
        .bind(millis(t.execution_timeout))
        .bind(t.max_attempts as i32)
        .bind(t.wait_for_delegate)
        .bind(key)
        .bind(fingerprint)
        .bind(t.created_at)
        .fetch_optional(pool)
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(ref db) if db.code().as_deref() == Some("23503") => StoreError::NotFound("connector"),
            e if is_unique_violation(&e) => Conflict::Duplicate {
                what: "task",
                name: t.id.to_string(),
            }
            .into(),
            e => map_err(e),
        })?;
    if let Some(row) = inserted {
        return Ok(Inserted::Created(rows::task(&row)?));
    }
    // The idempotency key was taken (only it can make DO NOTHING skip the insert).
    let Some(idem) = &t.idempotency else {
        return Err(StoreError::Internal("insert skipped without an idempotency key".into()));
    };
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE account = $1 AND idempotency_key = $2");
    let row = sqlx::query(&sql)
        .bind(&account)
        .bind(&idem.key)
        .fetch_one(pool)
        .await
        .map_err(map_err)?;
    let existing = rows::task(&row)?;
    match &existing.spec.idempotency {
        Some(prev) if prev.fingerprint == idem.fingerprint => Ok(Inserted::Existing(existing)),
        _ => Err(Conflict::IdempotencyMismatch(idem.key.clone()).into()),
    }
}

pub(crate) async fn get_task(pool: &PgPool, id: TaskId) -> StoreResult<Task> {
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1");
    let row = sqlx::query(&sql)
        .bind(id.0)
        .fetch_optional(pool)
        .await
        .map_err(map_err)?;
    rows::task(&row.ok_or(StoreError::NotFound("task"))?)
}

pub(crate) async fn list_tasks(pool: &PgPool, q: &TaskQuery) -> StoreResult<Page<Task>> {
    let (a, o, p) = within(q.within.as_ref());
    let states: Vec<&str> = q.states.iter().map(|s| s.as_str()).collect();
    let limit = q.effective_limit();
    let sql = format!(
        "SELECT {TASK_COLUMNS} FROM tasks
         WHERE {} AND (cardinality($4::text[]) = 0 OR state = ANY($4)) AND ($5::text IS NULL OR task_type = $5)
           AND ($6::uuid IS NULL OR connector_id = $6) AND ($7::uuid IS NULL OR id < $7)
         ORDER BY id DESC LIMIT $8",
        within_sql(1)
    );
    let rows = sqlx::query(&sql)
        .bind(a)
        .bind(o)
        .bind(p)
        .bind(&states)
        .bind(q.task_type.as_ref().map(|t| t.as_str()))
        .bind(q.connector.map(|c| c.0))
        .bind(q.before.map(|t| t.0))
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(map_err)?;
    let items = rows.iter().map(rows::task).collect::<StoreResult<Vec<_>>>()?;
    let next = if items.len() == limit as usize {
        items.last().map(Task::id)
    } else {
        None
    };
    Ok(Page { items, next })
}

pub(crate) async fn queued_tasks(pool: &PgPool, account: Option<&Ident>, limit: u32) -> StoreResult<Vec<Task>> {
    let sql = format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE state = 'queued' AND ($1::text IS NULL OR account = $1)
         ORDER BY priority DESC, created_at, id LIMIT $2"
    );
    let rows = sqlx::query(&sql)
        .bind(account.map(Ident::as_str))
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(map_err)?;
    rows.iter().map(rows::task).collect()
}

pub(crate) async fn claim_task(
    pool: &PgPool,
    task: TaskId,
    instance: InstanceId,
    at: DateTime<Utc>,
) -> StoreResult<Claim> {
    let mut tx = crate::begin(pool).await?;
    // Task first, then instance: the lock order every transaction here follows. The
    // conditional update is the arbiter: a concurrent claimer blocks on the row lock, then
    // re-checks `state = 'queued'` against the committed row and updates nothing.
    let sql = format!(
        "UPDATE tasks SET state = 'assigned', attempt = attempt + 1, instance_id = $2, assigned_at = $3, updated_at = $3
         WHERE id = $1 AND state = 'queued'
         RETURNING {TASK_COLUMNS}"
    );
    let Some(row) = sqlx::query(&sql)
        .bind(task.0)
        .bind(instance.0)
        .bind(at)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?
    else {
        return Ok(Claim::TaskNotQueued);
    };
    let claimed = rows::task(&row)?;
    let slot = sqlx::query(
        "UPDATE delegate_instances SET active_tasks = active_tasks + 1 WHERE id = $1 AND active_tasks < capacity
         RETURNING id",
    )
    .bind(instance.0)
    .fetch_optional(&mut *tx)
    .await
    .map_err(map_err)?;
    if slot.is_none() {
        let exists = sqlx::query("SELECT 1 FROM delegate_instances WHERE id = $1")
            .bind(instance.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.rollback().await.map_err(map_err)?;
        return Ok(if exists.is_some() {
            Claim::InstanceFull
        } else {
            Claim::InstanceGone
        });
    }
    sqlx::query("INSERT INTO task_attempts (task_id, attempt, instance_id, assigned_at) VALUES ($1, $2, $3, $4)")
        .bind(task.0)
        .bind(claimed.attempt.0 as i32)
        .bind(instance.0)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    tx.commit().await.map_err(map_err)?;
    Ok(Claim::Claimed(Box::new(claimed)))
}

/// Loads a task under a row lock and checks the fence.
/// The task, locked until the transaction ends.
async fn lock_task(tx: &mut Transaction<'_, Postgres>, id: TaskId) -> StoreResult<Task> {
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1 FOR UPDATE");
    let row = sqlx::query(&sql)
        .bind(id.0)
        .fetch_optional(&mut **tx)
        .await
        .map_err(map_err)?;
    rows::task(&row.ok_or(StoreError::NotFound("task"))?)
}

pub(crate) async fn transition_task(pool: &PgPool, t: &Transition) -> StoreResult<Task> {
    let mut tx = crate::begin(pool).await?;
    let mut task = lock_task(&mut tx, t.task_id).await?;
    t.check_fences(&task)?;
    let released = task
        .apply(t.event, t.at, t.failure.clone(), t.result.clone())
        .map_err(Conflict::from)?;
    let sql = format!(
        "UPDATE tasks SET state = $2, runs = $3, instance_id = $4, started_at = $5, finished_at = $6,
             failure_reason = $7, failure_detail = $8, result = $9, updated_at = $10, run_deadline = $11
         WHERE id = $1 RETURNING {TASK_COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(task.id().0)
        .bind(task.state.as_str())
        .bind(task.runs as i32)
        .bind(task.instance_id.map(|i| i.0))
        .bind(task.started_at)
        .bind(task.finished_at)
        .bind(task.failure.as_ref().map(|f| f.reason.as_str()))
        .bind(task.failure.as_ref().map(|f| f.detail.as_str()))
        .bind(task.result.as_ref().map(Json))
        .bind(task.updated_at)
        .bind(task.run_deadline)
        .fetch_one(&mut *tx)
        .await
        .map_err(map_err)?;
    if let Some(instance) = released {
        // The instance may have been removed meanwhile; then there is no slot to free.
        sqlx::query("UPDATE delegate_instances SET active_tasks = active_tasks - 1 WHERE id = $1 AND active_tasks > 0")
            .bind(instance.0)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
    }
    let (acquired, ended) = match (t.event, released) {
        (TaskEvent::Acquire, _) => (Some(t.at), None),
        (_, Some(_)) => (None, Some(t.at)),
        _ => (None, None),
    };
    if acquired.is_some() || ended.is_some() {
        sqlx::query(
            "UPDATE task_attempts SET acquired_at = COALESCE($3, acquired_at), ended_at = COALESCE($4, ended_at),
                 outcome = COALESCE($5, outcome)
             WHERE task_id = $1 AND attempt = $2",
        )
        .bind(task.id().0)
        .bind(task.attempt.0 as i32)
        .bind(acquired)
        .bind(ended)
        .bind(ended.map(|_| task.state.as_str()))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    }
    tx.commit().await.map_err(map_err)?;
    rows::task(&row)
}

pub(crate) async fn record_progress(
    pool: &PgPool,
    id: TaskId,
    attempt: Attempt,
    progress: &serde_json::Value,
    at: DateTime<Utc>,
) -> StoreResult<Task> {
    let mut tx = crate::begin(pool).await?;
    let task = lock_task(&mut tx, id).await?;
    if attempt != task.attempt {
        return Err(Conflict::StaleAttempt {
            presented: attempt,
            current: task.attempt,
        }
        .into());
    }
    if task.state != TaskState::Running {
        return Err(Conflict::TaskState(task.state).into());
    }
    let sql = format!("UPDATE tasks SET progress = $2, updated_at = $3 WHERE id = $1 RETURNING {TASK_COLUMNS}");
    let row = sqlx::query(&sql)
        .bind(id.0)
        .bind(Json(progress))
        .bind(at)
        .fetch_one(&mut *tx)
        .await
        .map_err(map_err)?;
    tx.commit().await.map_err(map_err)?;
    rows::task(&row)
}

pub(crate) async fn task_attempts(pool: &PgPool, id: TaskId) -> StoreResult<Vec<TaskAttempt>> {
    let rows = sqlx::query("SELECT * FROM task_attempts WHERE task_id = $1 ORDER BY attempt")
        .bind(id.0)
        .fetch_all(pool)
        .await
        .map_err(map_err)?;
    rows.iter().map(rows::attempt).collect()
}

// --- capability results ------------------------------------------------------------------

pub(crate) async fn record_capability_result(pool: &PgPool, r: &CapabilityResult) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO capability_results (instance_id, basis, reachable, detail, checked_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (instance_id, basis) DO UPDATE
           SET reachable = EXCLUDED.reachable, detail = EXCLUDED.detail, checked_at = EXCLUDED.checked_at
           WHERE capability_results.checked_at <= EXCLUDED.checked_at",
    )
    .bind(r.instance_id.0)
    .bind(&r.basis.0)
    .bind(r.reachable)
    .bind(&r.detail)
    .bind(r.checked_at)
    .execute(pool)
    .await
    .map_err(|e| match e {
        sqlx::Error::Database(ref db) if db.code().as_deref() == Some("23503") => {
            StoreError::NotFound("delegate instance")
        }
        e => map_err(e),
    })?;
    Ok(())
}

pub(crate) async fn capability_results(pool: &PgPool, instances: &[InstanceId]) -> StoreResult<Vec<CapabilityResult>> {
    let ids: Vec<Uuid> = instances.iter().map(|i| i.0).collect();
    let rows = sqlx::query("SELECT * FROM capability_results WHERE instance_id = ANY($1) ORDER BY instance_id, basis")
        .bind(&ids)
        .fetch_all(pool)
        .await
        .map_err(map_err)?;
    rows.iter()
        .map(|r| {
            Ok(CapabilityResult {
                instance_id: InstanceId(rows::get(r, "instance_id")?),
                basis: CapabilityBasis(rows::get(r, "basis")?),
                reachable: rows::get(r, "reachable")?,
                detail: rows::get(r, "detail")?,
                checked_at: rows::get(r, "checked_at")?,
            })
        })
        .collect()
}

// --- selection log -----------------------------------------------------------------------

pub(crate) async fn append_selection_log(pool: &PgPool, entries: &[SelectionLogEntry]) -> StoreResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let tasks: Vec<Uuid> = entries.iter().map(|e| e.task_id.0).collect();
    let attempts: Vec<i32> = entries.iter().map(|e| e.attempt.0 as i32).collect();
    let ats: Vec<DateTime<Utc>> = entries.iter().map(|e| e.at).collect();
    let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
    let summaries: Vec<&str> = entries.iter().map(|e| e.summary.as_str()).collect();
    let details: Vec<Json<&serde_json::Value>> = entries.iter().map(|e| Json(&e.detail)).collect();
    // One statement for the batch; WITH ORDINALITY keeps the entries in the given order.
    sqlx::query(
        "INSERT INTO selection_log (task_id, attempt, at, kind, summary, detail)
         SELECT t, a, at, k, s, d
         FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::text[], $5::text[], $6::jsonb[])
              WITH ORDINALITY AS u(t, a, at, k, s, d, n)
         ORDER BY n",
    )
    .bind(&tasks)
    .bind(&attempts)
    .bind(&ats)
    .bind(&kinds)
    .bind(&summaries)
    .bind(&details)
    .execute(pool)
    .await
    .map_err(|e| match e {
        sqlx::Error::Database(ref db) if db.code().as_deref() == Some("23503") => StoreError::NotFound("task"),
        e => map_err(e),
    })?;
    Ok(())
}

pub(crate) async fn selection_log(pool: &PgPool, task: TaskId) -> StoreResult<Vec<SelectionLogEntry>> {
    let rows = sqlx::query("SELECT * FROM selection_log WHERE task_id = $1 ORDER BY id")
        .bind(task.0)
        .fetch_all(pool)
        .await
        .map_err(map_err)?;
    rows.iter()
        .map(|r| {
            let kind: String = rows::get(r, "kind")?;
            Ok(SelectionLogEntry {
                task_id: TaskId(rows::get(r, "task_id")?),
                attempt: Attempt(u32::try_from(rows::get::<i32>(r, "attempt")?).unwrap_or_default()),
                at: rows::get(r, "at")?,
                kind: SelectionKind::parse(&kind)
                    .ok_or_else(|| StoreError::Internal(format!("corrupt selection log kind {kind:?}")))?,
                summary: rows::get(r, "summary")?,
                detail: rows::get::<Json<serde_json::Value>>(r, "detail")?.0,
            })
        })
        .collect()
}

pub(crate) async fn prune_selection_log(pool: &PgPool, before: DateTime<Utc>) -> StoreResult<u64> {
    let done = sqlx::query("DELETE FROM selection_log WHERE at < $1")
        .bind(before)
        .execute(pool)
        .await
        .map_err(map_err)?;
    Ok(done.rows_affected())
}
