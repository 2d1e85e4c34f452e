//! A batch of task writes in one transaction (see `switchboard_store::batch`): one
//! `BEGIN IMMEDIATE`, reads of what the batch changes (`IN` lists), the plan (pure, shared
//! with the other backends), one multi-row statement per table for what it writes
//! (`INSERT ... VALUES (..), (..)` and `UPDATE ... FROM (VALUES ...)`), one `COMMIT`: one
//! sync of the WAL for the whole batch.
//!
//! Multi-row rather than one prepared statement per row: sqlx runs SQLite on a thread of
//! its own, so every statement is two thread hand-offs, and a profile of the single-row
//! version at 1,000 lifecycles a second spent most of the manager's CPU waking threads.

use async_trait::async_trait;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};
use switchboard_domain::{AuditEntry, ConnectorId, InstanceId, Task};
use switchboard_store::StoreResult;
use switchboard_store::batch::{self, Loaded, Plan, Precision, Slots, TaskWrite, Wanted, Written};
use switchboard_store::committer::BatchWriter;

use crate::rows::{self, TASK_COLUMNS, ms, scope_values, to_json};
use crate::{Db, map_err};

/// Ids per `IN` list, well under SQLite's limit of bound parameters.
const IN_LIST: usize = 500;

/// The batch writer of a [`crate::SqliteStore`].
#[derive(Debug)]
pub(crate) struct SqliteWriter {
    pub(crate) db: Db,
}

#[async_trait]
impl BatchWriter for SqliteWriter {
    async fn write_batch(&self, mut writes: Vec<TaskWrite>) -> StoreResult<Vec<StoreResult<Written>>> {
        let wanted = Wanted::of(&mut writes, Precision::Millis);
        // The committer runs each batch in a task of its own: nothing here is dropped
        // half-way (see `Db::write` for why that matters).
        let mut tx = self.db.write().await?;
        let loaded = load(&mut tx, &wanted).await?;
        let mut plan = batch::plan(&writes, loaded);
        if plan.is_empty() {
            tx.rollback().await.map_err(map_err)?;
            return Ok(plan.outcomes);
        }
        write(&mut tx, &mut plan).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(plan.outcomes)
    }
}

async fn load(conn: &mut SqliteConnection, wanted: &Wanted) -> StoreResult<Loaded> {
    let mut loaded = Loaded::default();
    for (account, key) in &wanted.idempotency {
        let row = sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE account = ? AND idempotency_key = ?"
        ))
        .bind(account)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_err)?;
        if let Some(row) = row {
            loaded
                .by_idempotency
                .insert((account.clone(), key.clone()), rows::task(&row)?);
        }
    }
    for ids in wanted.connectors.chunks(IN_LIST) {
        let mut q = QueryBuilder::<Sqlite>::new("SELECT id FROM connectors WHERE id IN (");
        let mut list = q.separated(", ");
        for id in ids {
            list.push_bind(id.0);
        }
        q.push(")");
        for row in q.build().fetch_all(&mut *conn).await.map_err(map_err)? {
            loaded
                .connectors
                .insert(ConnectorId(row.try_get("id").map_err(map_err)?));
        }
    }
    // One writer: nothing is locked by anybody else, so every named task is read alike.
    let mut named: Vec<_> = wanted.tasks.iter().chain(&wanted.claimed).copied().collect();
    named.extend(&wanted.logged);
    for ids in named.chunks(IN_LIST) {
        let mut q = QueryBuilder::<Sqlite>::new(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id IN ("));
        let mut list = q.separated(", ");
        for id in ids {
            list.push_bind(id.0);
        }
        q.push(")");
        for row in q.build().fetch_all(&mut *conn).await.map_err(map_err)? {
            let task = rows::task(&row)?;
            loaded.tasks.insert(task.id(), task);
        }
    }
    let instances = wanted.instances(loaded.tasks.values());
    for ids in instances.chunks(IN_LIST) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT id, active_tasks, capacity, draining, max_tasks - tasks_taken AS tasks_left \
                 FROM delegate_instances WHERE id IN (",
        );
        let mut list = q.separated(", ");
        for id in ids {
            list.push_bind(id.0);
        }
        q.push(")");
        for row in q.build().fetch_all(&mut *conn).await.map_err(map_err)? {
            let count = |name: &str| -> StoreResult<u32> {
                Ok(u32::try_from(row.try_get::<i64, _>(name).map_err(map_err)?).unwrap_or_default())
            };
            let slots = Slots {
                active: count("active_tasks")?,
                capacity: count("capacity")?,
                taking: !row.try_get::<bool, _>("draining").map_err(map_err)?,
                tasks_left: row
                    .try_get::<Option<i64>, _>("tasks_left")
                    .map_err(map_err)?
                    .map(|n| u32::try_from(n).unwrap_or_default()),
            };
            loaded
                .instances
                .insert(InstanceId(row.try_get("id").map_err(map_err)?), slots);
        }
    }
    // One writer: the counts cannot change before this transaction commits.
    for (account, key) in wanted.concurrency_keys(loaded.tasks.values()) {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM tasks \
             WHERE account = ? AND concurrency_key = ? AND state IN ('assigned', 'running')",
        )
        .bind(&account)
        .bind(&key)
        .fetch_one(&mut *conn)
        .await
        .map_err(map_err)?;
        loaded
            .held_by_key
            .insert((account, key), u32::try_from(n).unwrap_or(u32::MAX));
    }
    for (account, key) in &wanted.superseding {
        let found = sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE account = ? AND concurrency_key = ? AND state = 'queued' ORDER BY id"
        ))
        .bind(account)
        .bind(key)
        .fetch_all(&mut *conn)
        .await
        .map_err(map_err)?;
        let mut waiting = Vec::with_capacity(found.len());
        for row in found {
            let task = rows::task(&row)?;
            waiting.push(task.id());
            loaded.tasks.entry(task.id()).or_insert(task);
        }
        loaded.waiting_by_key.insert((account.clone(), key.clone()), waiting);
    }
    Ok(loaded)
}

async fn write(conn: &mut SqliteConnection, plan: &mut Plan) -> StoreResult<()> {
    for chunk in plan.inserts.chunks(rows_per_statement(37)) {
        insert_tasks(conn, chunk).await?;
    }
    for chunk in plan.updates.chunks(rows_per_statement(18)) {
        update_tasks(conn, chunk).await?;
    }
    for chunk in plan.slot_changes.chunks(rows_per_statement(2)) {
        let mut q = QueryBuilder::<Sqlite>::new("WITH u(id, delta) AS (");
        q.push_values(chunk, |mut row, (instance, delta)| {
            row.push_bind(instance.0).push_bind(*delta);
        });
        q.push(
            ") UPDATE delegate_instances SET active_tasks = MAX(delegate_instances.active_tasks + u.delta, 0) \
             FROM u WHERE delegate_instances.id = u.id",
        );
        q.build().execute(&mut *conn).await.map_err(map_err)?;
    }
    for chunk in plan.taken.chunks(rows_per_statement(2)) {
        let mut q = QueryBuilder::<Sqlite>::new("WITH u(id, n) AS (");
        q.push_values(chunk, |mut row, (instance, n)| {
            row.push_bind(instance.0).push_bind(*n);
        });
        q.push(
            ") UPDATE delegate_instances SET tasks_taken = delegate_instances.tasks_taken + u.n \
             FROM u WHERE delegate_instances.id = u.id",
        );
        q.build().execute(&mut *conn).await.map_err(map_err)?;
    }
    for chunk in plan.new_attempts.chunks(rows_per_statement(9)) {
        let failures = chunk
            .iter()
            .map(|a| a.failure.as_ref().map(to_json).transpose())
            .collect::<StoreResult<Vec<_>>>()?;
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO task_attempts (task_id, attempt, instance_id, assigned_at, acquired_at, ended_at, outcome, \
             failure, retry_at) ",
        );
        q.push_values(chunk.iter().zip(failures), |mut row, (a, failure)| {
            row.push_bind(a.task.0)
                .push_bind(i64::from(a.attempt.0))
                .push_bind(a.instance.0)
                .push_bind(ms(a.assigned_at))
                .push_bind(a.acquired_at.map(ms))
                .push_bind(a.ended_at.map(ms))
                .push_bind(a.outcome.map(|o| o.as_str()))
                .push_bind(failure)
                .push_bind(a.retry_at.map(ms));
        });
        q.build().execute(&mut *conn).await.map_err(map_err)?;
    }
    for chunk in plan.attempt_changes.chunks(rows_per_statement(7)) {
        let failures = chunk
            .iter()
            .map(|c| c.failure.as_ref().map(to_json).transpose())
            .collect::<StoreResult<Vec<_>>>()?;
        let mut q = QueryBuilder::<Sqlite>::new(
            "WITH u(task_id, attempt, acquired_at, ended_at, outcome, failure, retry_at) AS (",
        );
        q.push_values(chunk.iter().zip(failures), |mut row, (c, failure)| {
            row.push_bind(c.task.0)
                .push_bind(i64::from(c.attempt.0))
                .push_bind(c.acquired_at.map(ms))
                .push_bind(c.ended_at.map(ms))
                .push_bind(c.outcome.map(|o| o.as_str()))
                .push_bind(failure)
                .push_bind(c.retry_at.map(ms));
        });
        q.push(
            ") UPDATE task_attempts SET acquired_at = COALESCE(u.acquired_at, task_attempts.acquired_at), \
             ended_at = COALESCE(u.ended_at, task_attempts.ended_at), \
             outcome = COALESCE(u.outcome, task_attempts.outcome), \
             failure = COALESCE(u.failure, task_attempts.failure), \
             retry_at = COALESCE(u.retry_at, task_attempts.retry_at) \
             FROM u WHERE task_attempts.task_id = u.task_id AND task_attempts.attempt = u.attempt",
        );
        q.build().execute(&mut *conn).await.map_err(map_err)?;
    }
    for chunk in plan.log.chunks(rows_per_statement(6)) {
        // One statement inserts its rows in the order of its VALUES: ids keep the order.
        let mut details = Vec::with_capacity(chunk.len());
        for e in chunk {
            details.push(to_json(&e.detail)?);
        }
        let mut q =
            QueryBuilder::<Sqlite>::new("INSERT INTO selection_log (task_id, attempt, at, kind, summary, detail) ");
        q.push_values(chunk.iter().zip(details), |mut row, (e, detail)| {
            row.push_bind(e.task_id.0)
                .push_bind(i64::from(e.attempt.0))
                .push_bind(ms(e.at))
                .push_bind(e.kind.as_str())
                .push_bind(e.summary.as_str())
                .push_bind(detail);
        });
        q.build().execute(&mut *conn).await.map_err(map_err)?;
    }
    let mut ids = Vec::with_capacity(plan.audits.len());
    for e in &plan.audits {
        ids.push(insert_audit(conn, e).await?);
    }
    plan.number_audits(&ids);
    if !plan.log_appends.is_empty() {
        crate::logs::write_appends(conn, plan).await?;
    }
    Ok(())
}

/// Rows of `columns` bound parameters each that fit in one statement: well under
/// SQLite's limit of 32,766 parameters, and at most 500.
fn rows_per_statement(columns: usize) -> usize {
    (30_000 / columns).clamp(1, 500)
}

/// The JSON documents of a task, serialized before a statement borrows them.
struct TaskJson {
    payload: String,
    selectors: String,
    capabilities: String,
    result: Option<String>,
    progress: Option<String>,
    policy: Option<String>,
}

impl TaskJson {
    fn of(t: &Task) -> StoreResult<Self> {
        Ok(TaskJson {
            payload: to_json(&t.spec.payload)?,
            selectors: to_json(&t.spec.selectors)?,
            capabilities: to_json(&t.spec.capabilities)?,
            result: t.result.as_ref().map(to_json).transpose()?,
            progress: t.progress.as_ref().map(to_json).transpose()?,
            policy: switchboard_store::columns::StoredPolicy::of(&t.spec)
                .as_ref()
                .map(to_json)
                .transpose()?,
        })
    }
}

async fn insert_tasks(conn: &mut SqliteConnection, tasks: &[Task]) -> StoreResult<()> {
    let json = tasks.iter().map(TaskJson::of).collect::<StoreResult<Vec<_>>>()?;
    let mut q = QueryBuilder::<Sqlite>::new(
        "INSERT INTO tasks (id, account, org, project, scope_path, task_type, payload, selectors, connector_id, \
         capabilities, priority, assign_timeout_ms, execution_timeout_ms, max_attempts, wait_for_delegate, \
         idempotency_key, idempotency_fingerprint, state, attempt, runs, instance_id, failure_reason, \
         failure_detail, result, progress, created_at, updated_at, assigned_at, started_at, finished_at, \
         assign_deadline, run_deadline, concurrency_key, policy, retry_at, failure_code, failure_retryable) ",
    );
    q.push_values(tasks.iter().zip(json), |mut row, (t, json)| {
        let (account, org, project, path) = scope_values(&t.spec.scope);
        row.push_bind(t.id().0)
            .push_bind(account)
            .push_bind(org)
            .push_bind(project)
            .push_bind(path)
            .push_bind(t.spec.task_type.as_str().to_owned())
            .push_bind(json.payload)
            .push_bind(json.selectors)
            .push_bind(t.spec.connector_id.map(|c| c.0))
            .push_bind(json.capabilities)
            .push_bind(t.spec.priority)
            .push_bind(duration_ms(t.spec.assign_timeout))
            .push_bind(duration_ms(t.spec.execution_timeout))
            .push_bind(i64::from(t.spec.max_attempts))
            .push_bind(t.spec.wait_for_delegate)
            .push_bind(t.spec.idempotency.as_ref().map(|i| i.key.clone()))
            .push_bind(t.spec.idempotency.as_ref().map(|i| i.fingerprint.clone()))
            .push_bind(t.state.as_str())
            .push_bind(i64::from(t.attempt.0))
            .push_bind(i64::from(t.runs))
            .push_bind(t.instance_id.map(|i| i.0))
            .push_bind(t.failure.as_ref().map(|f| f.reason.as_str()))
            .push_bind(t.failure.as_ref().map(|f| f.detail.clone()))
            .push_bind(json.result)
            .push_bind(json.progress)
            .push_bind(ms(t.spec.created_at))
            .push_bind(ms(t.updated_at))
            .push_bind(t.assigned_at.map(ms))
            .push_bind(t.started_at.map(ms))
            .push_bind(t.finished_at.map(ms))
            // The same sum as `Task::assign_deadline`, on the stored (millisecond) values.
            .push_bind(assign_deadline(t))
            .push_bind(t.run_deadline.map(ms))
            .push_bind(switchboard_store::columns::concurrency_key(t).map(str::to_owned))
            .push_bind(json.policy)
            .push_bind(t.retry_at.map(ms))
            .push_bind(t.failure.as_ref().and_then(|f| f.code.clone()))
            .push_bind(t.failure.as_ref().is_none_or(|f| f.retryable));
    });
    q.build().execute(&mut *conn).await.map_err(map_err)?;
    Ok(())
}

async fn update_tasks(conn: &mut SqliteConnection, tasks: &[Task]) -> StoreResult<()> {
    let mut json = Vec::with_capacity(tasks.len());
    for t in tasks {
        json.push((
            t.result.as_ref().map(to_json).transpose()?,
            t.progress.as_ref().map(to_json).transpose()?,
        ));
    }
    let mut q = QueryBuilder::<Sqlite>::new(
        "WITH u(id, state, attempt, runs, instance_id, failure_reason, failure_detail, result, progress, \
         updated_at, assigned_at, started_at, finished_at, run_deadline, retry_at, assign_deadline, failure_code, \
         failure_retryable) AS (",
    );
    q.push_values(tasks.iter().zip(json), |mut row, (t, (result, progress))| {
        row.push_bind(t.id().0)
            .push_bind(t.state.as_str())
            .push_bind(i64::from(t.attempt.0))
            .push_bind(i64::from(t.runs))
            .push_bind(t.instance_id.map(|i| i.0))
            .push_bind(t.failure.as_ref().map(|f| f.reason.as_str()))
            .push_bind(t.failure.as_ref().map(|f| f.detail.clone()))
            .push_bind(result)
            .push_bind(progress)
            .push_bind(ms(t.updated_at))
            .push_bind(t.assigned_at.map(ms))
            .push_bind(t.started_at.map(ms))
            .push_bind(t.finished_at.map(ms))
            .push_bind(t.run_deadline.map(ms))
            .push_bind(t.retry_at.map(ms))
            .push_bind(assign_deadline(t))
            .push_bind(t.failure.as_ref().and_then(|f| f.code.clone()))
            .push_bind(t.failure.as_ref().is_none_or(|f| f.retryable));
    });
    q.push(
        ") UPDATE tasks SET state = u.state, attempt = u.attempt, runs = u.runs, instance_id = u.instance_id, \
         failure_reason = u.failure_reason, failure_detail = u.failure_detail, result = u.result, \
         progress = u.progress, updated_at = u.updated_at, assigned_at = u.assigned_at, \
         started_at = u.started_at, finished_at = u.finished_at, run_deadline = u.run_deadline, \
         retry_at = u.retry_at, assign_deadline = u.assign_deadline, failure_code = u.failure_code, \
         failure_retryable = u.failure_retryable \
         FROM u WHERE tasks.id = u.id",
    );
    q.build().execute(&mut *conn).await.map_err(map_err)?;
    Ok(())
}

async fn insert_audit(conn: &mut SqliteConnection, e: &AuditEntry) -> StoreResult<i64> {
    let (account, org, project, path) = match &e.key_scope {
        Some(s) => {
            let (a, o, p, path) = scope_values(s);
            (Some(a), o, p, Some(path))
        }
        None => (None, None, None, None),
    };
    let row = sqlx::query(
        "INSERT INTO audit_log (at, actor, key_id, account, org, project, scope_path, method, route, path, status, \
         remote) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(ms(e.at))
    .bind(&e.actor)
    .bind(e.key_id.map(|k| k.0))
    .bind(account)
    .bind(org)
    .bind(project)
    .bind(path)
    .bind(&e.method)
    .bind(&e.route)
    .bind(&e.path)
    .bind(i64::from(e.status))
    .bind(&e.remote)
    .fetch_one(&mut *conn)
    .await
    .map_err(map_err)?;
    row.try_get("id").map_err(map_err)
}

/// The same sum as `Task::assign_deadline`, on the stored (millisecond) values.
fn assign_deadline(t: &Task) -> i64 {
    ms(t.retry_at.unwrap_or(t.spec.created_at)).saturating_add(duration_ms(t.spec.assign_timeout))
}

fn duration_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
