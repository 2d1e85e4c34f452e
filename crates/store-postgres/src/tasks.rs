//! Tasks: the queue, the atomic claim, fenced transitions, attempts, capability results
//! and the selection log.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::types::Json;
use switchboard_domain::{
    Attempt, CapabilityBasis, CapabilityResult, Ident, InstanceId, SelectionKind, SelectionLogEntry, Task, TaskAttempt,
    TaskId,
};
use switchboard_store::{Page, QueueQuery, QueueShapes, StoreError, StoreResult, TaskQuery};
use uuid::Uuid;

use crate::map_err;
use crate::rows::{self, TASK_COLUMNS, within, within_sql};

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

/// One aggregate over the queued tasks (the partial index `tasks_queue` holds them): a
/// group per shape, largest first, and the count of all of them beside each row.
pub(crate) async fn queue_shapes(pool: &PgPool, q: &QueueQuery) -> StoreResult<QueueShapes> {
    let (a, o, p) = within(q.within.as_ref());
    let sql = format!(
        "SELECT account, org, project, task_type, selectors, connector_id, capabilities, attempt > 0 AS retried,
                count(*) AS n, min(id::text)::uuid AS oldest, max(id::text)::uuid AS newest, min(created_at) AS oldest_at,
                (sum(count(*)) OVER ())::bigint AS total, concurrency_key,
                max((policy->'concurrency'->>'limit')::int) AS concurrency_limit,
                count(*) FILTER (WHERE retry_at > $7) AS backing_off
         FROM tasks
         WHERE state = 'queued' AND {} AND ($4::text IS NULL OR task_type = $4) AND ($5::uuid IS NULL OR connector_id = $5)
         GROUP BY account, org, project, task_type, selectors, connector_id, capabilities, attempt > 0, concurrency_key
         ORDER BY n DESC, oldest_at LIMIT $6",
        within_sql(1)
    );
    let found = sqlx::query(&sql)
        .bind(a)
        .bind(o)
        .bind(p)
        .bind(q.task_type.as_ref().map(|t| t.as_str()))
        .bind(q.connector.map(|c| c.0))
        .bind(i64::from(q.max_shapes.max(1)))
        .bind(chrono::Utc::now())
        .fetch_all(pool)
        .await
        .map_err(map_err)?;
    let waiting = match found.first() {
        Some(row) => u64::try_from(rows::get::<i64>(row, "total")?).unwrap_or_default(),
        None => 0,
    };
    let mut shapes = found.iter().map(rows::queue_shape).collect::<StoreResult<Vec<_>>>()?;
    let keys: std::collections::BTreeSet<(String, String)> = shapes
        .iter()
        .filter_map(|s| Some((s.scope.account_id().to_string(), s.concurrency.as_ref()?.key.clone())))
        .collect();
    if !keys.is_empty() {
        let keys: Vec<(String, String)> = keys.into_iter().collect();
        let held = held_by_keys(pool, &keys).await.map_err(map_err)?;
        for shape in &mut shapes {
            let account = shape.scope.account_id().to_string();
            if let Some(c) = &mut shape.concurrency {
                c.running = held.get(&(account, c.key.clone())).copied().unwrap_or(0);
            }
        }
    }
    Ok(QueueShapes { waiting, shapes })
}

pub(crate) async fn concurrency_held(pool: &PgPool, account: &Ident, key: &str) -> StoreResult<u32> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM tasks
         WHERE account = $1 AND concurrency_key = $2 AND state IN ('assigned', 'running')",
    )
    .bind(account.as_str())
    .bind(key)
    .fetch_one(pool)
    .await
    .map_err(map_err)?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// How many tasks of each concurrency key `(account, key)` are assigned or running; keys
/// with none are left out.
pub(crate) async fn held_by_keys<'c, E: sqlx::PgExecutor<'c>>(
    executor: E,
    keys: &[(String, String)],
) -> Result<std::collections::HashMap<(String, String), u32>, sqlx::Error> {
    let (accounts, names): (Vec<&str>, Vec<&str>) = keys.iter().map(|(a, k)| (a.as_str(), k.as_str())).unzip();
    let held: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT account, concurrency_key, count(*) FROM tasks
         WHERE concurrency_key IS NOT NULL AND state IN ('assigned', 'running')
           AND (account, concurrency_key) IN (SELECT * FROM unnest($1::text[], $2::text[]))
         GROUP BY account, concurrency_key",
    )
    .bind(&accounts)
    .bind(&names)
    .fetch_all(executor)
    .await?;
    Ok(held
        .into_iter()
        .map(|(a, k, n)| ((a, k), u32::try_from(n).unwrap_or(u32::MAX)))
        .collect())
}

pub(crate) async fn active_by_scope(pool: &PgPool) -> StoreResult<Vec<(switchboard_domain::Scope, u64)>> {
    let found = sqlx::query(
        "SELECT account, org, project, count(*) AS n FROM tasks WHERE state IN ('assigned', 'running')
         GROUP BY account, org, project",
    )
    .fetch_all(pool)
    .await
    .map_err(map_err)?;
    found.iter().map(rows::scope_count).collect()
}

pub(crate) async fn queued_tasks(pool: &PgPool, account: Option<&Ident>, limit: u32) -> StoreResult<Vec<Task>> {
    let sql = format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE state = 'queued' AND ($1::text IS NULL OR account = $1)
           AND (retry_at IS NULL OR retry_at <= $3)
         ORDER BY queue_key, id LIMIT $2"
    );
    let rows = sqlx::query(&sql)
        .bind(account.map(Ident::as_str))
        .bind(i64::from(limit))
        .bind(chrono::Utc::now())
        .fetch_all(pool)
        .await
        .map_err(map_err)?;
    rows.iter().map(rows::task).collect()
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
