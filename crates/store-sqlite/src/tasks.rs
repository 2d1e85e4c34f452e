//! Tasks: submission (idempotent), listing, the queue, the atomic claim, fenced
//! transitions, progress, attempts, capability results and the selection log.
//!
//! Every read-then-write here runs in one `BEGIN IMMEDIATE` transaction on the single
//! writer connection, so the checks it makes (the task is queued, the instance has a free
//! slot, the attempt is current) still hold when it writes.

use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Sqlite};
use switchboard_domain::{CapabilityResult, Ident, InstanceId, SelectionLogEntry, Task, TaskAttempt, TaskId};
use switchboard_store::{Page, QueueQuery, QueueShapes, StoreError, StoreResult, TaskQuery};

use crate::error::is_foreign_key_violation;
use crate::rows::{self, ATTEMPT_COLUMNS, TASK_COLUMNS, ms, to_json};
use crate::{Db, map_err};

pub(crate) async fn get_task(db: &Db, id: TaskId) -> StoreResult<Task> {
    let row = sqlx::query(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?"))
        .bind(id.0)
        .fetch_optional(&db.reader)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound("task"))?;
    rows::task(&row)
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

/// One aggregate over the queued tasks: a group per shape, largest first, and the count
/// of all of them beside each row. Selectors and capabilities are stored normalized, so
/// their JSON text compares as the values do.
pub(crate) async fn queue_shapes(db: &Db, query: &QueueQuery) -> StoreResult<QueueShapes> {
    let mut q = QueryBuilder::<Sqlite>::new(
        "SELECT account, org, project, task_type, selectors, connector_id, capabilities, attempt > 0 AS retried, \
         count(*) AS n, min(id) AS oldest, max(id) AS newest, min(created_at) AS oldest_at, \
         sum(count(*)) OVER () AS total, concurrency_key, \
         max(CAST(json_extract(policy, '$.concurrency.limit') AS INTEGER)) AS concurrency_limit, \
         count(*) FILTER (WHERE retry_at > ",
    );
    q.push_bind(ms(chrono::Utc::now()));
    q.push(") AS backing_off FROM tasks WHERE state = 'queued'");
    rows::push_within(&mut q, query.within.as_ref());
    if let Some(t) = &query.task_type {
        q.push(" AND task_type = ").push_bind(t.to_string());
    }
    if let Some(c) = query.connector {
        q.push(" AND connector_id = ").push_bind(c.0);
    }
    q.push(
        " GROUP BY account, org, project, task_type, selectors, connector_id, capabilities, attempt > 0, \
         concurrency_key ORDER BY n DESC, oldest_at LIMIT ",
    )
    .push_bind(i64::from(query.max_shapes.max(1)));
    let found = q.build().fetch_all(&db.reader).await.map_err(map_err)?;
    let waiting = match found.first() {
        Some(row) => u64::try_from(rows::get::<i64>(row, "total")?).unwrap_or_default(),
        None => 0,
    };
    let mut shapes = found.iter().map(rows::queue_shape).collect::<StoreResult<Vec<_>>>()?;
    let mut held: std::collections::HashMap<(String, String), u32> = std::collections::HashMap::new();
    for shape in &mut shapes {
        let account = shape.scope.account_id().clone();
        if let Some(c) = &mut shape.concurrency {
            let pair = (account.to_string(), c.key.clone());
            c.running = match held.get(&pair) {
                Some(n) => *n,
                None => {
                    let n = concurrency_held(db, &account, &c.key).await?;
                    held.insert(pair, n);
                    n
                }
            };
        }
    }
    Ok(QueueShapes { waiting, shapes })
}

pub(crate) async fn concurrency_held(db: &Db, account: &Ident, key: &str) -> StoreResult<u32> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM tasks WHERE account = ? AND concurrency_key = ? AND state IN ('assigned', 'running')",
    )
    .bind(account.as_str())
    .bind(key)
    .fetch_one(&db.reader)
    .await
    .map_err(map_err)?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

pub(crate) async fn active_by_scope(db: &Db) -> StoreResult<Vec<(switchboard_domain::Scope, u64)>> {
    let found = sqlx::query(
        "SELECT account, org, project, count(*) AS n FROM tasks WHERE state IN ('assigned', 'running') \
         GROUP BY account, org, project",
    )
    .fetch_all(&db.reader)
    .await
    .map_err(map_err)?;
    found.iter().map(rows::scope_count).collect()
}

pub(crate) async fn queued_tasks(db: &Db, account: Option<&Ident>, limit: u32) -> StoreResult<Vec<Task>> {
    // The literal `state = 'queued'` (not a parameter) lets SQLite use the partial index.
    let mut q = QueryBuilder::<Sqlite>::new(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE state = 'queued'"));
    if let Some(account) = account {
        q.push(" AND account = ").push_bind(account.to_string());
    }
    q.push(" AND (retry_at IS NULL OR retry_at <= ")
        .push_bind(ms(chrono::Utc::now()))
        .push(")");
    q.push(" ORDER BY queue_key ASC, id ASC LIMIT ")
        .push_bind(i64::from(limit));
    let found = q.build().fetch_all(&db.reader).await.map_err(map_err)?;
    found.iter().map(rows::task).collect()
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
